"""The paper's claims as one table: each a paired difference between two benchmark methods, with its CI.

    claim                                           difference                          metrics
    a video reference beats a raw image             tavr - image_raw                    identification, margin, lip sync
    ... and an image adapted to the scene           tavr - image_adapted                identification, margin, lip sync
    RL (stage 3) improves on stage 2                tavr - tavr_stage2                  identification, margin
    cross-scene stage 2 improves on stage 1         tavr_stage2 - tavr_stage1           identification, margin
    keeping 25% of reference tokens keeps identity  tavr_keep025 - tavr                 identification, margin (~0 is the claim)
    ... and saves time                              tavr_keep025 / tavr                 generation seconds per pair (a ratio)
    the reference's own audio helps lip sync        tavr - tavr_no_ref_audio            lip sync
    the reference is used at all (the control)      tavr - tavr_wrong_ref               identification, margin, person PSNR

Each difference is computed on the pairs both methods scored, with a paired-bootstrap 95% CI
(tavr.eval.stats). A claim whose methods were not benchmarked is listed as not run, never guessed.
A claim holds when the CI lies on its side of 0 (for keep 0.25: when the CI of the identity loss
stays within `KEEP_TOLERANCE`; for the time: a ratio of at most `SPEEDUP`), and is undecided when the
CI straddles it. A claim between two methods that drew no face at all is not testable: zeros
compared with zeros prove nothing (person PSNR needs no face, so it is always testable).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tavr.eval.stats import aligned, table_difference

KEEP_TOLERANCE = 0.1  # identification may drop at most this much for keep 0.25 to "keep identity"
SPEEDUP = 0.95  # "saves time": generation takes at most this share of the full reference's time
FACE_METRICS = {"id_top1", "id_margin", "identity", "lipsync"}  # read from detected faces: zero without one


@dataclass(frozen=True)
class Claim:
    text: str
    a: str
    b: str
    metrics: tuple[str, ...]
    kind: str = "greater"  # greater: a > b | same: |a - b| small | ratio: seconds of a over b


CLAIMS = (
    Claim("a video reference beats a raw reference image", "tavr", "image_raw", ("id_top1", "id_margin", "lipsync")),
    Claim("a video reference beats an image adapted to the target scene", "tavr", "image_adapted", ("id_top1", "id_margin", "lipsync")),
    Claim("RL on identity (stage 3) improves on stage 2", "tavr", "tavr_stage2", ("id_top1", "id_margin")),
    Claim("cross-scene fine-tuning (stage 2) improves on stage 1", "tavr_stage2", "tavr_stage1", ("id_top1", "id_margin")),
    Claim("keeping 25% of the reference tokens keeps identity", "tavr_keep025", "tavr", ("id_top1", "id_margin"), "same"),
    Claim("keeping 25% of the reference tokens saves time", "tavr_keep025", "tavr", ("gen_seconds",), "ratio"),
    Claim("the reference's own audio improves lip sync", "tavr", "tavr_no_ref_audio", ("lipsync",)),
    Claim("the model uses its reference (control: another person's)", "tavr", "tavr_wrong_ref", ("id_top1", "id_margin", "person_psnr")),
)


def _verdict(claim: Claim, diff: dict) -> str:
    lo, hi = diff["ci"]
    if lo is None:
        return "not computed"
    if claim.kind == "same":
        return "holds" if lo > -KEEP_TOLERANCE else ("fails" if hi < -KEEP_TOLERANCE else "undecided")
    return "holds" if lo > 0 else ("fails" if hi < 0 else "undecided")


def evaluate(tables: dict[str, pd.DataFrame], seed: int = 0) -> list[dict]:
    """One row per (claim, metric): {"claim", "a", "b", "metric", "diff", "ci", "n", "verdict"}."""
    rows = []
    for claim in CLAIMS:
        for metric in claim.metrics:
            row = {"claim": claim.text, "a": claim.a, "b": claim.b, "metric": metric}
            if claim.a not in tables or claim.b not in tables:
                missing = [m for m in (claim.a, claim.b) if m not in tables]
                rows.append({**row, "diff": None, "ci": [None, None], "n": 0, "verdict": f"not run ({', '.join(missing)} not benchmarked)"})
                continue
            a, b, ids = aligned(tables[claim.a], tables[claim.b])
            if metric not in a or metric not in b:
                rows.append({**row, "diff": None, "ci": [None, None], "n": 0, "verdict": f"not computed (no {metric} column)"})
                continue
            if claim.kind == "ratio":
                ratio = float(a.loc[ids, metric].mean() / b.loc[ids, metric].mean()) if ids else None
                verdict = "not computed" if ratio is None else ("holds" if ratio <= SPEEDUP else "fails")
                rows.append({**row, "diff": ratio, "ci": [None, None], "n": len(ids), "verdict": verdict})
                continue
            diff = table_difference(tables[claim.a], tables[claim.b], metric, seed)
            faceless = metric in FACE_METRICS and all("face_rate" in t and float(t.loc[ids, "face_rate"].max()) == 0 for t in (a, b))
            verdict = "not testable: neither method drew a face" if faceless and ids else _verdict(claim, diff)
            rows.append({**row, **diff, "verdict": verdict})
    return rows


def cells(row: dict) -> list[str]:
    """One claims row as table cells: claim, difference, metric, value, 95% CI, pairs, verdict (markdown and HTML alike)."""

    def num(v):
        return "n/a" if v is None else f"{v:+.3f}"

    op = "/" if row["metric"].endswith("seconds") else "-"
    value = "n/a" if row["diff"] is None else (f"{row['diff']:.2f}x" if op == "/" else num(row["diff"]))
    ci = "" if row["ci"][0] is None else f"[{num(row['ci'][0])}, {num(row['ci'][1])}]"
    return [row["claim"], f"{row['a']} {op} {row['b']}", row["metric"], value, ci, str(row["n"]), row["verdict"]]


HEADER = ["claim", "difference", "metric", "value", "95% CI", "pairs", "verdict"]


def markdown(rows: list[dict], pairs: int) -> str:
    lines = [f"The paper's claims on the cross-scene benchmark ({pairs} pairs; paired-bootstrap 95% CIs)", "",
             "| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
