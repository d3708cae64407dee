"""Training-step speed of tiny-preset candidates, side by side in one run: width, depth and window length.

    python benchmarks/transformer_sizes.py [--batch 8] [--repeats 4] [--out benchmarks/results/transformer_sizes.json]

Each candidate is a TAVRTransformer3DModel at 128 px (16x16 latents, 2x2 patches) trained for a few
AdamW steps on random inputs shaped like a latent-cache batch: the target's latent frames, the
masked background, a reference of as many frames with 62.5% of its tokens kept (the mean of
stage 1's token budget), no audio. The best of the repeats after the first is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from tavr.config import ModelConfig
from tavr.files import write_json
from tavr.models.transformer import TAVRTransformer3DModel

CANDIDATES = (  # (heads, head dim, ffn, layers, latent frames)
    (4, 32, 512, 4, 7),  # the old tiny preset on 25-frame windows
    (4, 64, 1024, 6, 7),  # the new one on 25-frame windows
    (4, 64, 1024, 6, 3),  # the new one on 9-frame windows (the default)
    (4, 48, 768, 6, 7),
)


def step_seconds(cfg: ModelConfig, frames: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = TAVRTransformer3DModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(batch, 16, frames, 16, 16)
    inputs = dict(background=torch.randn_like(x), background_mask=torch.ones(batch, 1, frames, 16, 16), reference=torch.randn_like(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x, torch.full((batch,), 500.0), torch.randn(batch, 4, 384), keep_ratio=0.625, **inputs).square().mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/transformer_sizes.json")
    args = ap.parse_args()
    rows = []
    for heads, head_dim, ffn, layers, frames in CANDIDATES:
        cfg = dataclasses.replace(ModelConfig(), num_attention_heads=heads, attention_head_dim=head_dim, ffn_dim=ffn, num_layers=layers)
        seconds = step_seconds(cfg, frames, args.batch, args.repeats)
        params = sum(p.numel() for p in TAVRTransformer3DModel(cfg).parameters())
        rows.append({"width": heads * head_dim, "layers": layers, "latent_frames": frames, "params_m": round(params / 1e6, 2),
                     "step_s": round(seconds, 3), "samples_per_s": round(args.batch / seconds, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {"command": f"python benchmarks/transformer_sizes.py --batch {args.batch} --repeats {args.repeats}",
                          "threads": torch.get_num_threads(), "rows": rows}, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
