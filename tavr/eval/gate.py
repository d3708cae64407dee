"""The deployment gate: does the candidate's benchmark earn a deployment?

    tavr gate [--summary reports/bench/summary.json] [--out reports/gate.json]

Reads the report's summary (tavr.eval.report) and checks the candidate method (`gate.candidate`)
against thresholds in the `gate` params section:

    coverage     the candidate and every baseline scored every pair asked for (none missing, none
                 failed to decode), and no video is shorter than its driving audio
    floors       identity (`identity_metric`, identification accuracy by default), lip sync, face
                 rate and background PSNR at least their minimum
    baselines    on evidence: the 95% paired-bootstrap CI of the candidate's identity minus each
                 baseline's (the report's "differences", same pairs, same noise) lies above
                 `identity_margin`; lip sync at most `lipsync_tolerance` below each baseline's.
                 A summary without CIs falls back to the point estimates
    production   when a model is registered in `gate.production` (`tavr promote`), identity and lip
                 sync at most `max_regression` below the numbers it was promoted with (its
                 bench.json), measured on as many pairs

Writes `out` = {"pass": bool, "reasons": [...], "checks": [{"check", "value", "threshold", "ok"}],
"candidate": {metric: value}, "production": {metric: value} or null}. `reasons` are the failed
checks when the gate fails, and every check when it passes, each a sentence with its numbers.
A metric that was not computed (null) fails every check that needs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tavr.config import GateConfig
from tavr.files import write_json

FLOORS = (("lipsync", "min_lipsync"), ("face_rate", "min_face_rate"), ("bg_psnr", "min_bg_psnr"))


def _check(rows: list[dict], name: str, value, threshold: float, above: bool, text: str) -> None:
    """Append one check: value >= threshold (above=True: value > threshold); None fails."""
    ok = value is not None and (value > threshold if above else value >= threshold)
    rows.append({"check": name, "value": value, "threshold": threshold, "ok": bool(ok),
                 "reason": f"{text}: {_num(value)}, needs {'>' if above else '>='} {threshold:.4f} ({'ok' if ok else 'FAIL'})"})  # fmt: skip


def _coverage(rows: list[dict], method: str, summary: dict) -> None:
    """Fails unless `method` scored every pair the benchmark asked for, each video as long as its audio."""
    asked = summary.get("pairs")
    cov = summary.get("coverage", {}).get(method)
    if cov is None:  # a summary from before coverage was recorded: only the scored count is known
        cov = {"scored": summary.get("scored", {}).get(method), "short": 0}
    ok = cov["scored"] == asked and not cov.get("short")
    lost = ", ".join(f"{cov[k]} {k}" for k in ("missing", "failed", "short") if cov.get(k)) or "none lost"
    rows.append({"check": f"coverage_{method}", "value": cov["scored"], "threshold": asked, "ok": bool(ok),
                 "reason": f"{method} scored {cov['scored']} of {asked} pairs ({lost}) ({'ok' if ok else 'FAIL'})"})  # fmt: skip


def _num(value) -> str:
    return "not computed" if value is None else f"{value:.4f}"


def load_production(directory: str | Path) -> dict | None:
    """The registered model's benchmark numbers (its bench.json), or None when none is registered."""
    if not directory or not Path(directory).exists():
        return None
    directory = Path(directory)
    path = directory / "bench.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is registered as production but has no bench.json to compare with "
                                "(register models with `tavr promote`)")  # fmt: skip
    return json.loads(path.read_text())


def decide(summary: dict, cfg: GateConfig, production: dict | None = None) -> dict:
    """The gate's decision on a report summary {"pairs", "methods": {method: {metric: value}}}."""
    methods = summary.get("methods", {})
    if cfg.candidate not in methods:
        raise ValueError(f"the summary has no results for the candidate {cfg.candidate!r} (it has: {', '.join(methods) or 'none'})")
    cand = methods[cfg.candidate]
    checks: list[dict] = []
    for m in [cfg.candidate, *[b for b in cfg.baselines if b in methods]]:  # means over part of the pairs decide nothing
        _coverage(checks, m, summary)
    ident = cfg.identity_metric
    _check(checks, f"min_{ident}", cand.get(ident), cfg.min_identity, False, f"{cfg.candidate} {ident}")
    for metric, key in FLOORS:
        _check(checks, f"min_{metric}", cand.get(metric), getattr(cfg, key), False, f"{cfg.candidate} {metric}")
    for base in cfg.baselines:
        if base not in methods:
            checks.append({"check": f"beats_{base}", "value": None, "threshold": None, "ok": False,
                           "reason": f"baseline {base} was not benchmarked, so it cannot be compared"})  # fmt: skip
            continue
        b = methods[base]
        diff = summary.get("differences", {}).get(f"{cfg.candidate} - {base}", {}).get(ident)
        if diff is not None:  # the lower end of the CI of the paired difference must clear the margin
            low = diff["ci"][0]
            _check(checks, f"{ident}_vs_{base}", low, cfg.identity_margin, True,
                   f"{cfg.candidate} {ident} minus {base}'s: {_num(diff['diff'])} over {diff['n']} pairs, 95% CI lower end")  # fmt: skip
        else:
            point = None if cand.get(ident) is None or b.get(ident) is None else cand[ident] - b[ident]
            _check(checks, f"{ident}_vs_{base}", point, cfg.identity_margin, True, f"{cfg.candidate} {ident} minus {base}'s (no CI)")
        sync = None if cand.get("lipsync") is None or b.get("lipsync") is None else cand["lipsync"] - b["lipsync"]
        _check(checks, f"lipsync_vs_{base}", sync, -cfg.lipsync_tolerance, False, f"{cfg.candidate} lip sync minus {base}'s")
    prod = None
    if production is not None:
        prod = production.get("metrics", {})
        if production.get("pairs") != summary.get("pairs"):
            checks.append({"check": "same_pairs", "value": summary.get("pairs"), "threshold": production.get("pairs"), "ok": False,
                           "reason": f"production was measured on {production.get('pairs')} pairs, the candidate on "
                                     f"{summary.get('pairs')}: not comparable"})  # fmt: skip
        for metric in (ident, "lipsync"):
            diff = None if cand.get(metric) is None or prod.get(metric) is None else cand[metric] - prod[metric]
            _check(checks, f"{metric}_vs_production", diff, -cfg.max_regression, False, f"{cfg.candidate} {metric} minus production's")
    passed = all(c["ok"] for c in checks)
    reasons = [c["reason"] for c in checks if c["ok"] == passed]
    return {"pass": passed, "reasons": reasons, "checks": checks, "candidate": dict(cand), "production": prod}


def run_gate(cfg: GateConfig, summary_path: str | Path | None = None, out: str | Path | None = None) -> dict:
    """Read the summary (and production's numbers), decide, write the decision."""
    path = Path(summary_path or cfg.summary)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `tavr bench report` first")
    summary = json.loads(path.read_text())
    decision = decide(summary, cfg, load_production(cfg.production))
    decision["pairs"] = summary.get("pairs")
    write_json(out or cfg.out, decision, indent=1)
    return decision
