"""Can dlib find faces in what a VAE reconstructs? The ceiling of every identity score.

    .venv/bin/python benchmarks/vae_faces.py --vae models/vae [--clips 8] [--every 4] [--json OUT]

Encodes and decodes the first `window` frames of `clips` bench clips and reports the PSNR of
each frame position (a causal VAE can fall apart after the chunk positions it was trained on)
and the share of frames (every `every`-th) where dlib's detector finds a face, in the
reconstructions and in the originals, at the threshold the rewards use (0) and at lower ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tavr.data import faces
from tavr.data.video import read_video
from tavr.models.vae import TAVRVAE
from tavr.pipeline import to_frames, to_video_tensor
from tavr.rl.rewards import _upsampled

THRESHOLDS = (0.0, -0.3, -0.6, -1.0)


def best_scores(frames: np.ndarray, every: int) -> list[float]:
    """dlib's best detection score in every `every`-th frame (-inf when nothing scores above -1)."""
    out = []
    for frame in frames[::every]:
        _, scores, _ = faces._detector().run(np.ascontiguousarray(_upsampled(frame, 256)), 0, -1.0)
        out.append(max(scores) if len(scores) else -np.inf)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", default="models/vae")
    ap.add_argument("--manifest", default="data/clips/manifest.parquet")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    vae = TAVRVAE.load(args.vae).eval()
    table = pd.read_parquet(args.manifest)
    root = Path(args.manifest).parent
    psnr, rec_scores, orig_scores = [], [], []
    for path in table.loc[table["split"] == "bench", "path"][: args.clips]:
        frames = read_video(root / path).frames[: args.window]
        x = to_video_tensor(frames)
        with torch.no_grad():
            y = vae.decode(vae.encode(x))
        mse = ((y - x) ** 2).mean(dim=(0, 1, 3, 4)) / 4  # per frame, [0, 1] scale
        psnr.append((10 * torch.log10(1 / mse.clamp_min(1e-10))).numpy())
        rec_scores += best_scores(to_frames(y), args.every)
        orig_scores += best_scores(frames, args.every)
    result = {
        "vae": args.vae, "clips": len(psnr), "psnr_per_frame": [round(float(v), 2) for v in np.mean(psnr, axis=0)],
        "psnr_mean": float(np.mean(psnr)),
        "face_rate_reconstructed": {str(t): float(np.mean(np.array(rec_scores) >= t)) for t in THRESHOLDS},
        "face_rate_original": {str(t): float(np.mean(np.array(orig_scores) >= t)) for t in THRESHOLDS},
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
