"""The pretraining quality curve as a markdown table (for docs/TRAINING.md), from a curve.jsonl.

    python benchmarks/pretrain_curve_table.py [runs/pretrain/curve.jsonl ...]

One row per point: step, samples seen, training seconds, face rate and mean best dlib score per
kind of pair (bench, bench with another person's reference, pretraining people), person PSNR.
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    points = [json.loads(line) for line in open(path)]
    head = ("| step | samples | train s | faces bench / wrong ref / pretrain | best dlib score bench / wrong ref / pretrain "
            "| person PSNR bench right / wrong / pretrain (dB) |")
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for p in points:
        e = p["eval"]
        kinds = ("bench", "bench_wrong_ref", "pretrain")
        lines.append(f"| {p['step']} | {p['samples']} | {p['train_seconds']:.0f} | "
                     + " / ".join(f"{e[k]['face_rate']:.2f}" for k in kinds) + " | "
                     + " / ".join(f"{e[k]['best_score']:.2f}" for k in kinds) + " | "
                     + " / ".join(f"{e[k]['person_psnr']:.1f}" for k in kinds) + " |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:] or ["runs/pretrain/curve.jsonl"]:
        print(f"{path}\n\n{table(path)}\n")
