"""Does a codec keep faces? PSNR and dlib face rate of reconstructed bench clips, side by side.

    .venv/bin/python benchmarks/codec_faces.py --codec models/codec [models/vae ...] \
        [--fit 4x8x16 1x8x16 ...] [--clips 0] [--every 4] [--json benchmarks/results/codec_faces_tiny_cpu.json]

Every `--codec` folder (a PatchCodec, a learned TAVRVAE or Wan2.1's VAE: tavr.models.vae.load_vae)
and every `--fit` shape (temporal x spatial x channels, a PatchCodec fitted here on the train split
only, as the codec stage does) encodes and decodes the first `window` frames of the bench clips
(identities and scenes no fit has seen). Per codec: PSNR per frame position and its mean, dlib's
face rate on every `every`-th reconstructed frame at the rewards' threshold (0) and lower ones,
encode and decode seconds per window, latent values per window; the originals' face rate beside
them. One run, one machine, the same clips for every codec.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tavr.data.video import read_video
from tavr.models.codec import PatchCodec
from tavr.models.vae import load_vae
from tavr.pipeline import to_frames, to_video_tensor
from tavr.rl.rewards import best_face_scores
from tavr.train.stage0_codec import clip_paths, train_windows

THRESHOLDS = (0.0, -0.3, -0.6, -1.0)


def best_scores(frames: np.ndarray, every: int) -> list[float]:
    """dlib's best detection score in every `every`-th frame (-inf when nothing scores above -1)."""
    return best_face_scores(frames[::every], -1.0).tolist()


def face_rates(scores: list[float]) -> dict[str, float]:
    return {str(t): float(np.mean(np.array(scores) >= t)) for t in THRESHOLDS}


def fit_shape(shape: str, manifest: str, window: int) -> tuple[PatchCodec, float]:
    """A PatchCodec of shape "TxSxC" fitted on every train window -> (codec, seconds)."""
    t, s, c = (int(v) for v in shape.split("x"))
    start = time.perf_counter()
    codec = PatchCodec({"temporal_patch": t, "spatial_patch": s, "z_dim": c})
    codec.fit(train_windows(clip_paths(manifest, "train"), window))
    return codec, time.perf_counter() - start


@torch.no_grad()
def measure(codec, clips: list[np.ndarray], every: int) -> dict:
    psnr, scores, enc_s, dec_s, values = [], [], 0.0, 0.0, 0
    for frames in clips:
        x = to_video_tensor(frames)
        t0 = time.perf_counter()
        z = codec.encode(x)
        t1 = time.perf_counter()
        y = codec.decode(z)
        enc_s, dec_s, values = enc_s + t1 - t0, dec_s + time.perf_counter() - t1, z[0].numel()
        mse = ((y - x) ** 2).mean(dim=(0, 1, 3, 4)) / 4  # per frame, [0, 1] scale
        psnr.append((10 * torch.log10(1 / mse.clamp_min(1e-10))).numpy())
        scores += best_scores(to_frames(y), every)
    return {
        "psnr_mean": round(float(np.mean(psnr)), 2), "psnr_min_clip": round(float(np.min(np.mean(psnr, axis=1))), 2),
        "psnr_per_frame": [round(float(v), 2) for v in np.mean(psnr, axis=0)], "face_rate": face_rates(scores),
        "encode_s_per_window": round(enc_s / len(clips), 4), "decode_s_per_window": round(dec_s / len(clips), 4),
        "latent_values_per_window": values, "compression": round(clips[0][: len(psnr[0])].size / values, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", nargs="*", default=["models/codec"], help="codec folders to measure")
    ap.add_argument("--fit", nargs="*", default=[], help="PatchCodec shapes TxSxC to fit on the train split and measure")
    ap.add_argument("--manifest", default="data/clips/manifest.parquet")
    ap.add_argument("--clips", type=int, default=0, help="bench clips (0 = all)")
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    paths = clip_paths(args.manifest, "bench")
    paths = paths[: args.clips] if args.clips else paths
    clips = [read_video(p).frames[: args.window] for p in paths]
    original = [s for frames in clips for s in best_scores(frames, args.every)]
    result = {"clips": len(clips), "window": args.window, "every": args.every, "frames_scored": len(original),
              "original": {"face_rate": face_rates(original)}, "codecs": {}}  # fmt: skip
    for folder in args.codec:
        codec = load_vae(folder).eval()
        result["codecs"][folder] = {"kind": type(codec).__name__, **measure(codec, clips, args.every)}
        print(folder, json.dumps({k: v for k, v in result["codecs"][folder].items() if k != "psnr_per_frame"}))
    for shape in args.fit:
        codec, seconds = fit_shape(shape, args.manifest, args.window)
        result["codecs"][f"fit:{shape}"] = {"kind": "PatchCodec", "fit_seconds": round(seconds, 1), **measure(codec, clips, args.every)}
        print(shape, json.dumps({k: v for k, v in result["codecs"][f"fit:{shape}"].items() if k != "psnr_per_frame"}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
