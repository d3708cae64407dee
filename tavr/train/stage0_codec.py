"""Stage 0 of the default chain: fit the patch codec on the train clips, in closed form.

    python -m tavr.train.stage0_codec [--params params.yaml]      (tavr train codec)

Reads every `window_frames`-frame window of every train clip of the manifest (never a bench
clip: the bench identities stay unseen by everything that is fitted or trained), accumulates
the covariance of the codec's space-time patches and keeps the top `z_dim` principal directions,
whitened (tavr/models/codec.py). With `init` (models/base/vae in params.yaml) nothing is fitted:
the codec a pretrained base was trained with is copied byte for byte, since the base's weights
only make sense in its latent space (as Wan2.1's transformer comes with Wan2.1's VAE). Then it
measures reconstruction PSNR on `eval_clips` bench clips. Writes, replacing the folder whole:

    out/config.json, out/model.safetensors     the codec (tavr.models.vae.load_vae)
    out/metrics.json                           windows, explained variance, PSNR, seconds
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tavr.config import CodecConfig
from tavr.data.video import read_video
from tavr.files import replace_dir, sha256, write_json
from tavr.models.codec import PATCH_CODEC, PatchCodec
from tavr.models.vae import load_vae
from tavr.pipeline import to_video_tensor
from tavr.train import common


def clip_paths(manifest: str | Path, split: str) -> list[Path]:
    """The clips of one split, as paths, in manifest order."""
    table = pd.read_parquet(manifest)
    paths = [Path(manifest).parent / p for p in table.loc[table["split"] == split, "path"]]
    if not paths:
        raise ValueError(f"{manifest} has no {split} clips")
    return paths


def train_windows(paths: list[Path], frames: int, limit: int = 0) -> Iterator[torch.Tensor]:
    """Every whole `frames`-frame window of each clip -> (1, 3, frames, H, W); at most `limit` (0 = all)."""
    n = 0
    for path in paths:
        video = read_video(path).frames  # (F, H, W, 3)
        for start in range(0, len(video) - frames + 1, frames):
            if limit and n == limit:
                return
            yield to_video_tensor(video[start : start + frames])
            n += 1


@torch.no_grad()
def psnr(codec, paths: list[Path], frames: int, device: torch.device | str = "cpu") -> float:
    """Mean reconstruction PSNR (dB, [0, 1] scale) over the first `frames` frames of each clip;
    the clips go to `device`, the codec's."""
    scores = []
    for path in paths:
        x = to_video_tensor(read_video(path).frames[:frames]).to(device)
        mse = ((codec.decode(codec.encode(x)) - x) ** 2).mean().item() / 4  # [-1, 1] -> [0, 1]
        scores.append(10 * np.log10(1.0 / max(mse, 1e-10)))
    return float(np.mean(scores))


def _fitted(cfg: CodecConfig) -> tuple[PatchCodec, dict]:
    codec = PatchCodec({**PATCH_CODEC, "z_dim": cfg.z_dim})
    train_paths = clip_paths(cfg.manifest, "train")
    windows = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal windows
        for window in train_windows(train_paths, cfg.window_frames, cfg.max_windows):
            windows += 1
            yield window

    summary = codec.fit(counted())
    return codec, {"train_clips": len(train_paths), "windows": windows, "patches": summary["patches"],
                   "explained_variance": {k: round(v, 5) for k, v in summary["explained"].items()}}  # fmt: skip


def fit(cfg: CodecConfig) -> dict:
    """Fit (or take `init` as it is), measure, save; returns the metrics written to out/metrics.json."""
    start = time.perf_counter()
    out = Path(cfg.out)
    staged = out.with_name(out.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)  # left by a killed run
    if cfg.init:
        source = Path(cfg.init)
        if not (source / "model.safetensors").is_file() or not (source / "config.json").is_file():
            raise FileNotFoundError(f"codec.init={cfg.init!r} is not a codec folder (config.json, model.safetensors); "
                                    "set codec.init: '' to fit one on the train clips")  # fmt: skip
        staged.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(source / name, staged / name)
        codec, metrics = load_vae(staged), {"init": cfg.init, "sha256": sha256(staged / "model.safetensors")}
    else:
        codec, metrics = _fitted(cfg)
        codec.save_pretrained(staged)
    metrics["fit_seconds"] = time.perf_counter() - start
    bench_paths = clip_paths(cfg.manifest, "bench")[: cfg.eval_clips] if cfg.eval_clips else []
    metrics["psnr_bench"] = psnr(codec, bench_paths, cfg.window_frames) if bench_paths else None
    metrics["seconds"] = time.perf_counter() - start
    write_json(staged / "metrics.json", metrics, indent=1)
    replace_dir(staged, out)
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg, _ = common.parse_config(common.params_parser("Fit the patch codec on the train clips (closed form), or take codec.init."), argv)
    try:
        metrics = fit(cfg.codec)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
