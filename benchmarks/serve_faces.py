"""Faces in served videos: the validation pairs sent to `tavr serve` as files, through the client.

    .venv/bin/python benchmarks/serve_faces.py [--model models/export] [--pairs data/bench_pairs.json]
        [--count 10] [--steps N] [--json benchmarks/results/serve_faces_tiny_cpu.json]

The benchmark generates with the target's person mask; a user sends files and the server finds the
person itself (a head-and-shoulders region around the face it detects, TAVRPipeline.background_mask),
for as long as the driving audio lasts. This measures what a user gets: for each of the first
`count` pairs of the validation slice (`bench.validation`, never scored by the report), it sends the
pair's reference clip (with its own voice, the reference audio), the target clip as the background and
the target's audio as the driving audio over V1 (`tavr.serve.client.generate`), then counts the
frames of the returned mp4 in which dlib finds a face (the bench's `face_rate`: tavr.rl.rewards.face_track).
Writes per request: face rate, frames, the server's seconds; and the mean face rate and the share of
requests whose video holds a face in at least 80% of its frames.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from serve_speed import server

from tavr.config import load_config
from tavr.data.pairs import load_pairs
from tavr.data.video import read_video
from tavr.rl.rewards import face_track
from tavr.serve.client import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/export", help="pipeline folder to serve")
    ap.add_argument("--pairs", default="data/bench_pairs.json")
    ap.add_argument("--count", type=int, default=10, help="pairs from the start of the validation slice")
    ap.add_argument("--steps", type=int, default=0, help="denoising steps per request (default: the model's)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    start, stop = load_config(None).bench.validation
    root, pairs = load_pairs(args.pairs)
    pairs = pairs[start:stop][: args.count]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, server(args.model, Path(tmp)) as (url, startup):
        for pair in pairs:
            out = Path(tmp) / f"{pair['pair_id']}.mp4"
            # the reference mp4 carries the person's own voice, which the server takes as the reference audio
            answer = generate(url, root / pair["reference"], root / pair["target"], root / pair["driving_audio"], out,
                              steps=args.steps or None, seed=0)  # fmt: skip
            frames = read_video(out).frames
            _, mouth = face_track(frames)
            rate = float((~np.isnan(mouth)).mean())
            rows.append({"pair_id": pair["pair_id"], "face_rate": rate, "frames": len(frames), "server_s": answer["seconds"]})
            print(json.dumps(rows[-1]), flush=True)
    rates = np.array([r["face_rate"] for r in rows])
    result = {"model": args.model, "steps": args.steps or "model default", "pairs": len(rows), "startup_s": round(startup, 1),
              "face_rate_mean": round(float(rates.mean()), 3), "requests_at_least_0.8": round(float((rates >= 0.8).mean()), 3),
              "rows": rows, "cpu_threads": os.cpu_count()}  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
