"""The benchmark report: every method's results side by side.

    tavr bench report [--dir reports/bench]

Reads <dir>/<method>/summary.json and pairs.csv for each method of `bench.methods` (as
`tavr bench` and `tavr bench score` write them) and writes, in <dir>:

    summary.json    {"pairs": N, "methods": {method: {metric: mean}}, "protocols": {method: protocol},
                     "scored": {method: pairs scored}, "coverage": {method: {"asked", "scored", "missing",
                     "failed", "short"}}, "ci": {method: {metric: {"mean", "ci": [lo, hi], "n"}}},
                     "differences": {"<first method> - <other>": {metric: {"diff", "ci", "n"}}}}: the
                     file `dvc metrics` and the gate read; CIs are paired-bootstrap 95% (tavr.eval.stats)
    summary.md      the summary table in markdown (for a pull request or `dvc metrics diff --md`)
    claims.md       the paper's claims, each a paired difference with its CI (tavr.eval.claims)
    index.html      summary table (best value per metric in bold), bar plots, frame grids for the
                    first `grid_pairs` pairs, the per-pair table with links to every video
    plots/metrics.png, plots/<pair_id>.png

A frame grid shows the middle frame of: the reference video, the target background as the
methods see it (person hidden), the image each image protocol was given, and every method's video.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from tavr.data.pairs import load_pairs
from tavr.data.synth import load_masks
from tavr.data.video import read_video
from tavr.eval import claims, stats
from tavr.eval.benchmark import METRICS
from tavr.files import write_json

# how each metric reads: higher is better, except these
LOWER_IS_BETTER = {"stability"}
CLOSER_TO_ZERO = {"lipsync_offset"}
KEY_METRICS = ("id_top1", "id_margin", "identity", "lipsync", "face_rate", "person_psnr")  # shown with 95% CIs
LABELS = {"id_top1": "identified (top-1) ↑", "id_margin": "identity margin ↑", "identity": "raw identity ↑", "lipsync": "lip sync ↑", "lipsync_offset": "sync offset (frames, 0 best)",
          "bg_psnr": "background PSNR ↑", "bg_ssim": "background SSIM ↑", "person_psnr": "person PSNR ↑", "stability": "face change ↓",
          "face_rate": "face rate ↑"}  # fmt: skip


def load_results(directory: Path, methods: list[str]) -> tuple[dict[str, dict], dict[str, pd.DataFrame], list[str]]:
    """(summaries, per-pair tables, methods without results) of the methods found under `directory`."""
    summaries, tables, missing = {}, {}, []
    for m in methods:
        folder = directory / m
        if not (folder / "summary.json").is_file() or not (folder / "pairs.csv").is_file():
            missing.append(m)
            continue
        summaries[m] = json.loads((folder / "summary.json").read_text())
        tables[m] = pd.read_csv(folder / "pairs.csv")
    return summaries, tables, missing


def _best(name: str, values: dict[str, float | None]) -> str | None:
    known = {m: v for m, v in values.items() if v is not None and np.isfinite(v)}
    if len(known) < 2:
        return None
    if name in CLOSER_TO_ZERO:
        return min(known, key=lambda m: abs(known[m]))
    return (min if name in LOWER_IS_BETTER else max)(known, key=known.get)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def coverage_text(summary: dict, method: str) -> str:
    """'scored/asked' pairs, with what was lost: '8/10 (1 missing, 1 failed, 2 short)'."""
    c = summary.get("coverage", {}).get(method)
    if c is None:
        return str(summary["scored"][method])
    lost = [f"{c[k]} {k}" for k in ("missing", "failed", "short") if c[k]]
    return f"{c['scored']}/{c['asked']}" + (f" ({', '.join(lost)})" if lost else "")


def _ci(entry: dict | None, key: str = "mean") -> str:
    if not entry or entry.get(key) is None:
        return "n/a"
    lo, hi = entry["ci"]
    return f"{entry[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(summary: dict) -> str:
    methods = summary["methods"]
    head = "| method | protocol | pairs scored | " + " | ".join(METRICS) + " |"
    rule = "|---" * (len(METRICS) + 3) + "|"
    rows = [f"| {m} | {summary['protocols'].get(m, '')} | {coverage_text(summary, m)} | "
            + " | ".join(_fmt(methods[m][k]) for k in METRICS) + " |" for m in methods]  # fmt: skip
    lines = [f"Cross-scene benchmark, {summary['pairs']} pairs", "", head, rule, *rows, ""]
    if summary.get("ci"):
        lines += ["Means with paired-bootstrap 95% confidence intervals", "",
                  "| method | " + " | ".join(KEY_METRICS) + " |", "|---" * (len(KEY_METRICS) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(_ci(summary["ci"][m].get(k)) for k in KEY_METRICS) + " |" for m in summary["ci"]]
        lines.append("")
    if summary.get("differences"):
        lines += ["Differences on the pairs both scored (95% CI; above 0 everywhere = a real difference)", "",
                  "| difference | " + " | ".join(KEY_METRICS) + " |", "|---" * (len(KEY_METRICS) + 1) + "|"]
        lines += [f"| {d} | " + " | ".join(_ci(v.get(k), "diff") for k in KEY_METRICS) + " |" for d, v in summary["differences"].items()]
        lines.append("")
    return "\n".join(lines)


def bar_plot(summary: dict, path: Path) -> None:
    """One bar chart per metric, a bar per method."""
    methods = list(summary["methods"])
    fig = Figure(figsize=(2.3 * len(METRICS), 2.8), layout="constrained")
    for i, name in enumerate(METRICS):
        ax = fig.add_subplot(1, len(METRICS), i + 1)
        values = [summary["methods"][m][name] for m in methods]
        ax.bar(range(len(methods)), [np.nan if v is None else v for v in values], color=[f"C{k}" for k in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(LABELS[name], fontsize=9)
        for k, v in enumerate(values):  # the number on every bar: a 0 has no bar to see
            ax.text(k, 0 if v is None else v, _fmt(v), ha="center", va="bottom", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _middle(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    frames = read_video(path).frames
    return frames[len(frames) // 2]


def frame_grid(pair: dict, root: Path, directory: Path, methods: list[str], path: Path) -> None:
    """Middle frames: reference | target background (person hidden) | image inputs | every method."""
    reference = read_video(root / pair["reference"]).frames
    target = read_video(root / pair["target"]).frames
    k = len(target) // 2
    hidden = target[k].copy()
    hidden[load_masks(root / pair["target_mask"])[k % len(target)]] = 0
    tiles = [("reference", reference[len(reference) // 2]), ("target bg", hidden)]
    for m in methods:
        image = directory / m / "inputs" / f"{pair['pair_id']}.png"
        if image.is_file():
            tiles.append((f"{m} input", np.asarray(Image.open(image).convert("RGB"))))
    for m in methods:
        tiles.append((m, _middle(directory / m / "videos" / f"{pair['pair_id']}.mp4")))
    h, w = hidden.shape[:2]
    sheet = Image.new("RGB", (w * len(tiles), h + 14), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, frame) in enumerate(tiles):
        if frame is not None:
            sheet.paste(Image.fromarray(frame).resize((w, h)), (i * w, 14))
        draw.text((i * w + 2, 1), label[: w // 6], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(summary: dict, tables: dict[str, pd.DataFrame], grids: list[str], missing: list[str]) -> str:
    methods = list(summary["methods"])
    rows = []
    best = {k: _best(k, {m: summary["methods"][m][k] for m in methods}) for k in METRICS}
    for m in methods:
        cells = [html.escape(m), html.escape(summary["protocols"].get(m, "")), html.escape(coverage_text(summary, m))]
        for k in METRICS:
            text = _fmt(summary["methods"][m][k])
            cells.append(f"<b>{text}</b>" if best[k] == m else text)
        rows.append(cells)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>TAVR cross-scene benchmark</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>Cross-scene benchmark: {summary['pairs']} pairs</h1>",
        "<p>Each pair: a reference video of a held-out person in one scene; the target is the same person in "
        "another scene, whose background (person hidden) and audio every method gets. Identity compares the "
        "generated face with the reference video (dlib embeddings); background scores exclude the person.</p>",
    ]
    if missing:
        parts.append(f"<p><b>Not benchmarked:</b> {html.escape(', '.join(missing))}</p>")
    parts += ["<h2>Summary</h2>", _table(["method", "protocol", "pairs", *[LABELS[k] for k in METRICS]], rows),
              "<img src='plots/metrics.png' alt='metrics per method'>"]  # fmt: skip
    if summary.get("claims"):
        body = [[html.escape(c) for c in claims.cells(r)] for r in summary["claims"]]
        parts += ["<h2>The paper's claims</h2><p>Paired differences on the pairs both methods scored, with paired-bootstrap "
                  "95% confidence intervals; a claim holds when its interval lies on its side of 0.</p>",
                  _table(claims.HEADER, body)]  # fmt: skip
    if grids:
        parts.append("<h2>Frames</h2>")
        parts += [f"<h3>{html.escape(p)}</h3><img src='plots/{html.escape(p)}.png' alt='{html.escape(p)}'>" for p in grids]
    parts.append("<h2>Every pair</h2>")
    ids = sorted(set().union(*(set(t["pair_id"]) for t in tables.values())))
    indexed = {m: t.set_index("pair_id") for m, t in tables.items()}
    header = ["pair", "person"] + [f"{m} {k}" for m in methods for k in ("identity", "lipsync", "bg_psnr")] + ["videos"]
    body = []
    for pid in ids:
        person = next((str(t.loc[pid, "person"]) for t in indexed.values() if pid in t.index), "")
        cells = [html.escape(pid), html.escape(person)]
        for m in methods:
            t = indexed[m]
            cells += [_fmt(float(t.loc[pid, k])) if pid in t.index else "missing" for k in ("identity", "lipsync", "bg_psnr")]
        links = [f"<a href='{html.escape(m)}/videos/{html.escape(pid)}.mp4'>{html.escape(m)}</a>" for m in methods]
        body.append([*cells, " ".join(links)])
    parts += [_table(header, body), "</body></html>"]
    return "\n".join(parts)


def build_report(directory: str | Path, methods: list[str] | tuple[str, ...], pairs_file: str | Path | None = None,
                 grid_pairs: int = 6) -> dict:  # fmt: skip
    """Write summary.json, summary.md, index.html and plots/ in `directory`; returns the summary."""
    directory = Path(directory)
    summaries, tables, missing = load_results(directory, list(methods))
    if not summaries:
        raise FileNotFoundError(f"no method has results in {directory} (looked for {', '.join(methods)}: "
                                "<method>/summary.json and pairs.csv, as `tavr bench --out` writes them)")  # fmt: skip
    summary = {
        "pairs": max(s["pairs"] for s in summaries.values()),
        "methods": {m: {k: s["metrics"].get(k) for k in METRICS} for m, s in summaries.items()},
        "protocols": {m: s.get("protocol", "external") for m, s in summaries.items()},
        "scored": {m: s["scored"] for m, s in summaries.items()},
        "coverage": {m: {"asked": s["pairs"], "scored": s["scored"], "missing": len(s.get("missing", [])),
                         "failed": len(s.get("failed", [])), "short": len(s.get("short", []))}
                     for m, s in summaries.items()},
        "ci": stats.intervals(tables, KEY_METRICS),
        "differences": stats.differences(tables, next(iter(summaries)), KEY_METRICS),
    }  # fmt: skip
    bar_plot(summary, directory / "plots" / "metrics.png")
    grids = []
    if pairs_file is not None and grid_pairs > 0:
        root, pairs = load_pairs(pairs_file)
        benched = set().union(*(set(t["pair_id"]) for t in tables.values()))
        for pair in [p for p in pairs if p["pair_id"] in benched][:grid_pairs]:
            frame_grid(pair, root, directory, list(summaries), directory / "plots" / f"{pair['pair_id']}.png")
            grids.append(pair["pair_id"])
    rows = claims.evaluate(tables)
    summary["claims"] = rows
    (directory / "claims.md").write_text(claims.markdown(rows, summary["pairs"]))
    (directory / "index.html").write_text(render_html(summary, tables, grids, missing))
    (directory / "summary.md").write_text(markdown(summary))
    write_json(directory / "summary.json", summary, indent=1)
    return summary
