"""Optional, outside the default chain: train the learned tiny Wan VAE on the ingested clips.

    python -m tavr.train.stage0_vae [--params params.yaml] [--resume auto|never|PATH]   (tavr train vae)

The default chain codes video with the patch codec (tavr/train/stage0_codec.py), which
reconstructs faces that this VAE, after its 300 CPU steps, does not (docs/TRAINING.md); this
stage stays for side-by-side measurements (benchmarks/codec_faces.py) and for anyone who wants
to train a learned codec longer.

Each step takes `batch_size` train clips (a resumable shuffled order), a random
window of `frames` frames and a random `crop` x `crop` square from each, and
minimises L1 reconstruction error plus a small KL term. At the end the
per-channel latent mean and std are estimated on whole frames and stored with
the weights, so later stages see normalised latents. Writes

    out/vae_config.json, out/vae.safetensors     the VAE (TAVRVAE.load)
    out/metrics.json                              reconstruction PSNR on bench clips, loss, seconds
    run_dir/checkpoints/, run_dir/dvclive/        resumable state, metric curves
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from tavr.config import VAEStageConfig, to_dict
from tavr.data.video import read_video
from tavr.files import write_json
from tavr.models.vae import PRESETS, TAVRVAE
from tavr.pipeline import to_video_tensor
from tavr.train import common
from tavr.train.stage0_codec import clip_paths, psnr


@functools.lru_cache(maxsize=None)
def _frames(path: Path) -> np.ndarray:
    """A clip's frames, decoded once per process (the train clips of TAVR-Synth take about 0.7 GB)."""
    return read_video(path).frames


def random_crops(paths: list[Path], index: list[int], frames: int, crop: int) -> torch.Tensor:
    """One random window and square crop per clip -> (B, 3, frames, crop, crop) in [-1, 1].

    Randomness comes from torch's global RNG, which checkpoints save and restore.
    """
    out = []
    for i in index:
        video = _frames(paths[i])  # (F, H, W, 3)
        f, h, w, _ = video.shape
        t = int(torch.randint(0, f - frames + 1, (1,)))
        y, x = int(torch.randint(0, h - crop + 1, (1,))), int(torch.randint(0, w - crop + 1, (1,)))
        out.append(to_video_tensor(video[t : t + frames, y : y + crop, x : x + crop]))
    return torch.cat(out)


def train(cfg: VAEStageConfig, config_dict: dict, resume: str | None = "auto", stop_after: int | None = None) -> dict:
    """Train to `cfg.run.steps`; `stop_after` ends this invocation early and returns {} (resume later)."""
    run = cfg.run
    start = time.perf_counter()
    # setup, run dir and config dump
    resume = common.fresh_if_changed(cfg.run_dir, resume, config_dict)
    accelerator = common.make_accelerator(run, cfg.run_dir)
    common.seed_everything(run.seed)
    common.RunDir(cfg.run_dir, config_dict, accelerator)

    # model, data, optimizer
    vae = TAVRVAE.from_config(PRESETS[cfg.preset])
    train_paths, bench_paths = clip_paths(cfg.manifest, "train"), clip_paths(cfg.manifest, "bench")
    order = common.EpochShuffler(len(train_paths), run.batch_size, run.seed, accelerator.process_index, accelerator.num_processes)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    scheduler = common.make_lr_schedule(optimizer, run)
    vae, optimizer = accelerator.prepare(vae, optimizer)

    step, prior_seconds = 0, 0.0  # seconds spent by earlier invocations of a resumed run
    ckpt = common.resume_from(cfg.run_dir, resume)
    if ckpt is not None:
        step, data_state = common.load_checkpoint(ckpt, vae, optimizer, scheduler, accelerator=accelerator)
        order.load_state_dict(data_state)
        prior_seconds = float(data_state.get("seconds", 0.0))
    tracker = common.Tracker(run, cfg.run_dir, config_dict, accelerator, resume_step=step if ckpt else None)
    bar = common.progress(run.steps, step, disable=not accelerator.is_main_process)
    model = accelerator.unwrap_model(vae)

    # loop
    losses = []
    vae.train()
    while step < run.steps:
        for _ in range(run.grad_accum):
            with accelerator.accumulate(vae):
                x = random_crops(train_paths, next(order), cfg.frames, cfg.crop).to(accelerator.device)
                recon, kl = vae(x)  # the prepared module: DDP's gradient hooks and autocast apply
                loss = (recon - x).abs().mean() + cfg.kl_weight * kl
                accelerator.backward(loss)
                common.clip_and_step(accelerator, vae, optimizer, scheduler, run.grad_clip)
        step += 1
        losses.append(loss.item())
        bar.update(loss.item(), run.batch_size * run.grad_accum * accelerator.num_processes)
        if step % run.log_every == 0 or step == run.steps:
            tracker.log(step, {"loss": float(np.mean(losses[-run.log_every :])), "kl": kl.item(), "lr": scheduler.get_last_lr()[0]})
        data_state = {**order.state_dict(), "seconds": prior_seconds + time.perf_counter() - start}
        if common.after_step(run, cfg.run_dir, step, vae, optimizer, scheduler, None, data_state, accelerator, stop_after):
            bar.close()
            tracker.close()
            return {}
    bar.close()

    # latent statistics on whole frames, then save
    vae.eval()
    metrics = {}
    if accelerator.is_main_process:
        windows = [to_video_tensor(read_video(p).frames[: cfg.frames]).to(accelerator.device)
                   for p in train_paths[: cfg.stats_windows]]  # fmt: skip
        model.set_latent_stats(*model.estimate_latent_stats(windows))
        model.save(cfg.out)
        first, last = common.first_last(losses if ckpt is None else common.logged_series(cfg.run_dir, "loss"))
        metrics = {
            "steps": step, "loss_first": first, "loss_last": last,
            "psnr_bench": psnr(model, bench_paths[:8], cfg.eval_frames, accelerator.device), "seconds": prior_seconds + time.perf_counter() - start,
        }  # fmt: skip
        write_json(Path(cfg.out) / "metrics.json", metrics, indent=1, newline=False)  # curves stay per step
    tracker.close()
    accelerator.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg, resume, _ = common.stage_args("Train the learned tiny Wan VAE on the ingested clips (optional).", argv, "vae")
    metrics = train(cfg.vae, to_dict(cfg.vae), resume)
    if metrics:
        print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
