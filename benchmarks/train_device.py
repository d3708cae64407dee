"""The training steps of stages 1, 2 and 3 on an accelerator: steps/s, peak memory and MFU per preset.

    python benchmarks/train_device.py [--presets tiny small 1.3b] [--stages stage1 stage2 stage3] [--steps 20] [--json OUT]

Per preset, a latent cache of random windows shaped like that preset's data (its latent channels,
9-frame windows, latent side at its clip size, its text and audio widths) is written to a temporary
folder and read back by `tavr.train.stage1.LatentCache`, so batches take the stages' own path to
the device. Each step is the stages' own code: `LatentCache.batch(..., device=accelerator.device)`,
`stage1.flow_loss` with the stage's token budget, `accelerator.backward`, `common.clip_and_step`
(AdamW, clipping, LR schedule) and the EMA update, under `common.make_accelerator` with
`mixed_precision: auto` (bf16 on a GPU, fp32 on the CPU); `1.3b` with gradient checkpointing.
Stage 1 draws same-scene references, stage 2 cross-scene ones: the same step, other rows.
Stage 3 is its own step without the rewards (they decode and run dlib on the CPU; random scores
stand in, which changes no tensor work on the accelerator): `stage3_rl.rollout` of the batch as
groups of `group_size` (8 SDE steps, no gradient), `stage3_rl.advantages`, then `train_timesteps`
x `stage3_rl.step_loss` with the KL to a frozen copy of the model, one optimizer step.

Reported per preset and stage: median step seconds after two warm-up steps, steps/s, samples/s,
peak accelerator memory, model FLOPs of one step (torch's FlopCounterMode) and MFU against a bf16
(GPU) or fp32 (CPU) matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from model_speed import SDPA_CPU, matmul_peak  # noqa: E402

from tavr.config import FlowStageConfig, RLStageConfig, RunConfig, load_config  # noqa: E402
from tavr.models.transformer import TAVRTransformer3DModel  # noqa: E402
from tavr.rl import grpo  # noqa: E402
from tavr.train import common, stage1, stage3_rl  # noqa: E402
from tavr.train.stage1 import LatentCache  # noqa: E402

SIDE = {"tiny": 128, "small": 256, "1.3b": 480}  # each preset's clip size (ingest.size)
BATCH = {"tiny": 16, "small": 8, "1.3b": 1}


def synthetic_cache(folder: Path, model, side: int, windows: int = 64, frames: int = 3, text_tokens: int = 16) -> Path:
    """A cache of `windows` random windows: 8 identities x 2 scenes x 2 clips x 2 windows each (N, C, F', h, w)."""
    g = torch.Generator().manual_seed(0)
    c, h = model.in_channels, side // 8
    latent = torch.randn(windows, c, frames, h, h, generator=g).half()
    mask = (torch.rand(windows, 1, frames, h, h, generator=g) > 0.5).to(torch.uint8)
    audio = torch.randn(windows, frames, 8, model.audio_dim, generator=g).half()
    save_file({"latent": latent, "mask": mask, "audio": audio}, str(folder / "cache.safetensors"))
    save_file({"text": torch.randn(1, text_tokens, model.text_dim, generator=g), "text_mask": torch.ones(1, text_tokens, dtype=torch.bool)},
              str(folder / "text.safetensors"))  # fmt: skip
    rows = [{"clip_id": f"p{i // 8}s{i // 4 % 2}c{i // 2 % 2}", "window": i % 2, "identity": f"p{i // 8}", "scene": f"s{i // 4 % 2}",
             "split": "train"} for i in range(windows)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "index.parquet")
    return folder


def flow_step(accelerator, model, optimizer, scheduler, ema, cache: LatentCache, run: RunConfig, pairing: str):
    """Stage 1's (same-scene) or stage 2's (cross-scene) training step k -> its model FLOPs when counted."""
    cfg, rows = FlowStageConfig(run=run, pairing=pairing), cache.rows("train")

    def step(k: int, count_flops: bool = False) -> float:
        targets = [int(rows[(k * run.batch_size + i) % len(rows)]) for i in range(run.batch_size)]
        gens = [stage1.rng(0, k, i) for i in range(len(targets))]
        refs = [cache.reference_for(r, pairing, g) for r, g in zip(targets, gens)]
        b = cache.batch(targets, refs, device=accelerator.device)
        counter = FlopCounterMode(display=False, custom_mapping=SDPA_CPU) if count_flops else None
        with counter or torch.enable_grad():
            loss = stage1.flow_loss(model, b, cfg, 0.625, True, True, gens)
            accelerator.backward(loss)
        common.clip_and_step(accelerator, model, optimizer, scheduler, run.grad_clip)
        ema.update(accelerator.unwrap_model(model), k + 1)
        return counter.get_total_flops() if counter else 0.0

    return step


def rl_step(accelerator, model, optimizer, scheduler, ema, cache: LatentCache, run: RunConfig):
    """Stage 3's step k without its rewards: rollout of batch_size samples in groups, advantages of
    random scores, train_timesteps losses with the KL to a frozen copy, one optimizer step."""
    cfg, rows = RLStageConfig(run=run), cache.rows("train")
    g = min(cfg.group_size, max(2, run.batch_size))
    n = max(1, run.batch_size // g)  # conditions
    sigmas = grpo.sigmas(cfg.sample_steps, cfg.shift)
    frozen = copy.deepcopy(accelerator.unwrap_model(model)).requires_grad_(False).eval()

    def reference(x, s, b):
        with accelerator.autocast():
            return stage3_rl._forward(frozen, x, s, b)

    def step(k: int, count_flops: bool = False) -> float:
        targets = [int(rows[(k * n + i) % len(rows)]) for i in range(n)]
        refs = [cache.reference_for(r, "cross_scene", stage1.rng(0, k, i, -1)) for i, r in enumerate(targets)]
        b = cache.batch([t for t in targets for _ in range(g)], [r for r in refs for _ in range(g)], device=accelerator.device)
        counter = FlopCounterMode(display=False, custom_mapping=SDPA_CPU) if count_flops else None
        with counter or torch.enable_grad():
            roll = stage3_rl.rollout(model, b, sigmas, cfg, [stage1.rng(0, k, i) for i in range(n * g)])
            adv = stage3_rl.advantages(np.random.default_rng(k).random(n * g), g, cfg.adv_clip, accelerator.device)
            for j in range(cfg.train_timesteps):
                loss, _ = stage3_rl.step_loss(model, reference, b, roll, j, sigmas, adv, cfg)
                accelerator.backward(loss / cfg.train_timesteps)
        common.clip_and_step(accelerator, model, optimizer, scheduler, run.grad_clip)
        ema.update(accelerator.unwrap_model(model), k + 1)
        return counter.get_total_flops() if counter else 0.0

    return step, n * g


def measure(preset: str, steps: int, peak: float, stages: list[str]) -> list[dict]:
    root = load_config(None, {"preset": preset})
    model_cfg = dataclasses.replace(root.model, gradient_checkpointing=preset == "1.3b")
    run = RunConfig(batch_size=BATCH[preset], lr=1e-4, warmup_steps=1, ema_decay=0.999, mixed_precision="auto", tracker="none")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        accelerator = common.make_accelerator(run, tmp)
        torch.manual_seed(0)
        model = TAVRTransformer3DModel(model_cfg)
        cache = LatentCache(synthetic_cache(Path(tmp), model_cfg, SIDE[preset]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr)
        scheduler = common.make_lr_schedule(optimizer, run)
        model, optimizer = accelerator.prepare(model, optimizer)
        ema = common.EMA(accelerator.unwrap_model(model), run.ema_decay)
        parts = (accelerator, model, optimizer, scheduler, ema, cache, run)
        for stage in stages:
            if stage == "stage3":
                step, batch = rl_step(*parts)
            else:
                step, batch = flow_step(*parts, "same_scene" if stage == "stage1" else "cross_scene"), run.batch_size
            if accelerator.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            flops = step(0, count_flops=True)
            times = []
            for k in range(1, steps + 3):
                _sync(accelerator.device)
                start = time.perf_counter()
                step(k)
                _sync(accelerator.device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times[2:])
            mem = torch.cuda.max_memory_allocated() / 2**30 if accelerator.device.type == "cuda" else None
            out.append({
                "preset": preset, "stage": stage, "device": str(accelerator.device), "precision": accelerator.mixed_precision,
                "batch": batch, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "gradient_checkpointing": model_cfg.gradient_checkpointing, "step_s": round(seconds, 4),
                "steps_per_s": round(1 / seconds, 2), "samples_per_s": round(batch / seconds, 1),
                "peak_memory_gib": round(mem, 2) if mem is not None else None, "tflop_per_step": round(flops / 1e12, 3),
                "mfu": round(flops / seconds / peak, 3),
            })  # fmt: skip
            print(json.dumps(out[-1]), flush=True)
            del step  # stage 3's frozen copy
        del model, optimizer, ema
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "1.3b"])
    ap.add_argument("--stages", nargs="+", default=["stage1", "stage2", "stage3"], choices=["stage1", "stage2", "stage3"])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per stage, after two warm-up steps")
    ap.add_argument("--json", default="", help="write the rows here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype, n=8192 if device.type == "cuda" else 2048)
    print(f"matmul peak on {device} ({dtype}): {peak / 1e12:.1f} TFLOP/s", flush=True)
    rows = [r for p in args.presets for r in measure(p, args.steps, peak, args.stages)]
    if args.json:
        Path(args.json).write_text(json.dumps({"matmul_peak_tflops": round(peak / 1e12, 1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
