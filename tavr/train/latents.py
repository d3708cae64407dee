"""Encode every clip once: the cache that stages 1-3 train from, so no step runs the codec encoder.

    python -m tavr.train.latents [--params params.yaml]

Each clip is cut into windows of `window_frames` frames (4k + 1). Per window:

    latent      (C, F', h, w)   normalised latent of the frames (patch codec or VAE)  float16
    mask        (1, F', h, w)   person mask at latent resolution (max per cell)      uint8
    audio       (F', W, A)      audio feature windows, one per latent frame           float16

The masked-background latent is latent * (1 - mask), taken when a batch is built, the
same rule the pipeline applies to the encoded target background at inference.

written as out/cache.safetensors (each key stacked over windows: (N, ...)), with
out/index.parquet (one row per window: clip_id, window, start_frame, identity, scene,
split, path) and out/text.safetensors (the prompt's embedding and mask, shared).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from tavr.config import GenerateConfig, LatentsConfig
from tavr.data.synth import load_masks
from tavr.files import write_json
from tavr.data.video import read_audio, read_video
from tavr.models.encoders import build_audio_encoder, build_text_encoder
from tavr.models.vae import latent_frames, load_vae
from tavr.pipeline import mask_to_latent, to_video_tensor
from tavr.progress import bar as progress_bar
from tavr.train import common


def windows_of(table: pd.DataFrame, window: int) -> pd.DataFrame:
    """One row per (clip, window) with the window's first frame."""
    rows = []
    for row in table.itertuples():
        for w in range(int(row.frames) // window):
            rows.append({"clip_id": row.clip_id, "window": w, "start_frame": w * window, "identity": row.identity,
                         "scene": row.scene, "split": row.split, "path": row.path})  # fmt: skip
    return pd.DataFrame(rows)


@torch.no_grad()
def encode_cache(cfg: LatentsConfig, generate: GenerateConfig, progress: bool = True) -> dict:
    start = time.perf_counter()
    latent_frames(cfg.window_frames)  # raises unless 4k + 1
    device = common.auto_device(cfg.device)
    vae = load_vae(cfg.vae).eval().to(device)
    audio_encoder = build_audio_encoder(generate.audio_encoder, generate.audio_encoder_path or None, context=generate.audio_context)
    text_encoder = build_text_encoder(generate.text_encoder, generate.text_encoder_path or None)
    manifest = pd.read_parquet(cfg.manifest)
    root = Path(cfg.manifest).parent
    index = windows_of(manifest, cfg.window_frames)
    files = manifest.set_index("clip_id")[["path", "mask_path", "audio_path"]]
    if index.empty:
        raise ValueError(f"{cfg.manifest}: no clip has {cfg.window_frames} frames")
    hop = round(generate.audio_rate / generate.fps)
    out: dict[str, list[torch.Tensor]] = {"latent": [], "mask": [], "audio": []}
    batch_frames = []

    def flush():
        if batch_frames:
            out["latent"].append(vae.encode(torch.cat(batch_frames).to(device)).half().cpu())
            batch_frames.clear()

    n = cfg.window_frames
    bar = progress_bar(total=len(index), desc="latents", unit="window", disable=not progress)
    for clip_id, group in index.groupby("clip_id", sort=False):
        clip = files.loc[clip_id]  # the manifest names each clip's mp4, mask and wav
        frames = read_video(root / clip["path"]).frames
        masks = load_masks(root / clip["mask_path"])
        audio = read_audio(root / clip["audio_path"], generate.audio_rate)
        for w in group.itertuples():
            sl = slice(w.start_frame, w.start_frame + n)
            batch_frames.append(to_video_tensor(frames[sl]))
            out["mask"].append(mask_to_latent(masks[sl]).to(torch.uint8))
            seg = torch.from_numpy(audio[w.start_frame * hop : (w.start_frame + n) * hop].copy())[None]
            out["audio"].append(audio_encoder(seg, n, generate.fps).half())
            if len(batch_frames) == cfg.batch:
                flush()
            bar.update(1)
    flush()
    bar.close()
    tensors = {k: torch.cat(v).contiguous() for k, v in out.items()}
    text, text_mask = text_encoder([cfg.prompt])

    target = Path(cfg.out)
    work = target.with_name(target.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(work / "cache.safetensors"))
    save_file({"text": text.contiguous(), "text_mask": text_mask.contiguous()}, str(work / "text.safetensors"))
    index.assign(row=np.arange(len(index))).to_parquet(work / "index.parquet", index=False)
    summary = {
        "windows": len(index), "window_frames": n, "shapes": {k: list(v.shape[1:]) for k, v in tensors.items()},
        "splits": {k: int(v) for k, v in index["split"].value_counts().items()},
    }  # fmt: skip
    (work / "summary.json").write_text(json.dumps(summary, indent=1))  # no timings: the cache is byte-reproducible
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(work, target)
    return {**summary, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    cfg, _ = common.parse_config(common.params_parser("Encode every clip once into the latent cache."), argv)
    summary = encode_cache(cfg.latents, cfg.generate)
    write_json(cfg.latents.timing, {"seconds": summary["seconds"], "windows": summary["windows"]})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
