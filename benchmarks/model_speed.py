"""Transformer speed: TAVR vs diffusers' Wan, token selection, achieved FLOP/s.

    .venv/bin/python benchmarks/model_speed.py [--preset tiny] [--batch 4] [--repeats 5] [--json out.json]

All numbers come from one run on one machine (fp32 on CPU; bf16 on a GPU):

1. matmul peak: dense 2048^3 matmul FLOP/s of this machine, measured here.
2. TAVR vs Wan at the same token count: Wan on a 26-latent-frame clip (1664 tokens at
   128 px) against TAVR on 13 target frames + a 13-frame reference kept whole (the same
   1664 tokens in self-attention) with audio, masked background and token selection on.
   Training step (forward, backward, AdamW) and sampling step (forward, no grad) at batch 1
   and at the training batch (e.g. the three guidance passes batched, or several videos).
3. Token selection: TAVR with a 2-s reference at keep 0.25 vs 1.0; self-attention FLOPs
   (4 L^2 D per block, counted analytically) and denoising-step time.
4. Achieved FLOP/s of a TAVR training step (FlopCounterMode) over the matmul peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from tavr.config import build_config
from tavr.models.transformer import TAVRTransformer3DModel


def matmul_peak(device, dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def timed_pair(fn_a, fn_b, repeats: int, device) -> tuple[float, float]:
    """Median seconds of two functions run alternately (A, B, A, B, ...), so machine drift hits both."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, ta), (fn_b, tb)):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t)
    return sorted(ta)[repeats // 2], sorted(tb)[repeats // 2]


def wan_like(cfg):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=tuple(cfg.patch_size), num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
        cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps,
    )  # fmt: skip


def inputs(cfg, batch, frames, ref_frames, side, device, dtype, tavr: bool):
    lat = side // 8
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    kw = dict(hidden_states=r(batch, 16, frames, lat, lat), timestep=torch.full((batch,), 500.0, device=device),
              encoder_hidden_states=r(batch, 8, cfg.text_dim))  # fmt: skip
    if tavr:
        kw.update(
            background=r(batch, 16, frames, lat, lat), background_mask=r(batch, 1, frames, lat, lat).gt(0).to(dtype),
            reference=r(batch, 16, ref_frames, lat, lat), audio=r(batch, frames, 8, cfg.audio_dim),
            reference_audio=r(batch, ref_frames, 8, cfg.audio_dim),
        )  # fmt: skip
    return kw


def train_step(model, kw, opt, **extra):
    def step():
        opt.zero_grad(set_to_none=True)
        out = model(**kw, **extra)
        out = out.sample if hasattr(out, "sample") else out
        out.float().square().mean().backward()
        opt.step()

    return step


def sample_step(model, kw, **extra):
    @torch.no_grad()
    def step():
        model(**kw, **extra)

    return step


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's FlopCounterMode has formulas for the CUDA attention kernels only; count the CPU one too
SDPA_CPU = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def self_attention_flops(cfg, batch, tokens: int) -> float:
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    return 4.0 * batch * tokens**2 * dim * cfg.num_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--side", type=int, default=128, help="frame side in pixels (latent = side / 8)")
    ap.add_argument("--frames", type=int, default=13, help="target latent frames (13 = a 2-s clip at 25 fps)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = build_config({"preset": args.preset}).model
    f, b = args.frames, args.batch
    tokens_per_frame = (args.side // 16) ** 2
    res = {"preset": args.preset, "device": str(device), "dtype": str(dtype), "batch": b, "threads": torch.get_num_threads()}
    res["matmul_peak_flops"] = matmul_peak(device, dtype)

    torch.manual_seed(0)
    tavr = TAVRTransformer3DModel(cfg).to(device, dtype).train()
    wan = wan_like(cfg).to(device, dtype).train()
    res["params"] = {"tavr": sum(p.numel() for p in tavr.parameters()), "wan": sum(p.numel() for p in wan.parameters())}

    # 2. the same token count in self-attention: Wan on 2F frames vs TAVR on F target + F reference
    wan_kw = inputs(cfg, b, 2 * f, 0, args.side, device, dtype, tavr=False)
    tavr_kw = inputs(cfg, b, f, f, args.side, device, dtype, tavr=True)
    steps = {
        name: train_step(model, kw, torch.optim.AdamW(model.parameters(), lr=1e-5), **extra)
        for name, model, kw, extra in (("wan", wan, wan_kw, {}), ("tavr", tavr, tavr_kw, {"keep_ratio": 1.0}))
    }
    res["wan_train_s"], res["tavr_train_s"] = timed_pair(steps["wan"], steps["tavr"], args.repeats, device)
    wan.eval(), tavr.eval()
    wan_one, tavr_one = ({k: v[:1] for k, v in kw.items()} for kw in (wan_kw, tavr_kw))
    res["wan_sample_s"], res["tavr_sample_s"] = timed_pair(
        sample_step(wan, wan_one), sample_step(tavr, tavr_one, keep_ratio=1.0), 3 * args.repeats, device
    )
    res["wan_sample_batch_s"], res["tavr_sample_batch_s"] = timed_pair(
        sample_step(wan, wan_kw), sample_step(tavr, tavr_kw, keep_ratio=1.0), args.repeats, device
    )
    res["sample_batch_ratio"] = res["tavr_sample_batch_s"] / res["wan_sample_batch_s"]
    res["tokens_same_count"] = 2 * f * tokens_per_frame
    res["train_ratio"] = res["tavr_train_s"] / res["wan_train_s"]
    res["sample_ratio"] = res["tavr_sample_s"] / res["wan_sample_s"]

    # 3. token selection with a 2-s reference (13 latent frames)
    for keep in (1.0, 0.25):
        kept = max(1, round(keep * f * tokens_per_frame))
        res[f"attn_flops_keep{keep}"] = self_attention_flops(cfg, 1, f * tokens_per_frame + kept)
    res["denoise_s_keep1.0"], res["denoise_s_keep0.25"] = timed_pair(
        sample_step(tavr, tavr_one, keep_ratio=1.0), sample_step(tavr, tavr_one, keep_ratio=0.25), 3 * args.repeats, device
    )
    res["selection_attn_flops_ratio"] = res["attn_flops_keep1.0"] / res["attn_flops_keep0.25"]
    res["selection_speedup"] = res["denoise_s_keep1.0"] / res["denoise_s_keep0.25"]

    # 4. achieved FLOP/s of a TAVR training step
    tavr.train()
    opt = torch.optim.AdamW(tavr.parameters(), lr=1e-5)
    step = train_step(tavr, tavr_kw, opt, keep_ratio=1.0)
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        step()
    res["train_step_flops"] = counter.get_total_flops()
    res["achieved_flops"] = res["train_step_flops"] / res["tavr_train_s"]
    res["mfu"] = res["achieved_flops"] / res["matmul_peak_flops"]

    for k, v in res.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
