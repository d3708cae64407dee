"""Stage 1: same-scene video pretraining of the transformer (stage 2 reuses this loop).

    python -m tavr.train.stage1 [--params params.yaml] [--resume auto|never|PATH]

Every training window of the latent cache is a target. Its reference is another
window: the other, non-overlapping window of the same clip (`pairing: same_scene`,
stage 1) or a window of the same identity filmed in another scene (`cross_scene`,
stage 2; `same_scene_share` of its samples keep stage 1's same-scene reference). The target background is the target latent with the person's cells
zeroed. The loss is the flow-matching velocity error, weighted up inside the person
mask. Each step keeps a random share of reference tokens, so token selection learns
every budget, and drops the reference or the audio now and then, for guidance. A share
`motion_prob` of steps continues a clip, as long-video inference does: each target is a
window with one before it in its clip, and the last `generate.motion_frames` latent frames
of that window enter as motion tokens.
Writes

    out/                          a pipeline folder (TAVRPipeline.from_pretrained), EMA weights
    out/metrics.json              steps, loss_first/last (means over the first/last 10%), val_loss,
                                  identity_heldout (tavr.eval.heldout), seconds
    run_dir/checkpoints/, dvclive/, wandb/
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from tavr import flow
from tavr.config import ConfigError, FlowStageConfig, GenerateConfig, TAVRConfig, to_dict
from tavr.eval.heldout import identity_heldout
from tavr.files import load_weights, sha256, write_json
from tavr.models.transformer import TAVRTransformer3DModel
from tavr.models.vae import load_vae
from tavr.pipeline import TAVRPipeline, masked_background, save_pipeline
from tavr.train import common


class LatentCache:
    """The cache written by `tavr.train.latents`, in memory: tensors (N, ...) and their index."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.tensors = load_file(str(directory / "cache.safetensors"))
        self.index = pd.read_parquet(directory / "index.parquet")
        text = load_file(str(directory / "text.safetensors"))
        self.text = text["text"].float()  # (1, L, text_dim)
        # reference candidates per window, in index order, worked out once instead of every step
        t = self.index
        self.candidates = {"same_scene": [], "cross_scene": []}
        for _, me in t.iterrows():
            self.candidates["same_scene"].append(t.index[(t["clip_id"] == me["clip_id"]) & (t["window"] != me["window"])].to_numpy())
            self.candidates["cross_scene"].append(t.index[(t["identity"] == me["identity"]) & (t["scene"] != me["scene"])].to_numpy())
        # the window just before each one in its clip (-1 for a clip's first window): its motion latents
        row_of = {(c, w): i for i, (c, w) in enumerate(zip(t["clip_id"], t["window"]))}
        self.previous = np.array([row_of.get((c, w - 1), -1) for c, w in zip(t["clip_id"], t["window"])])

    def rows(self, split: str) -> np.ndarray:
        return self.index.index[self.index["split"] == split].to_numpy()

    def reference_for(self, row: int, pairing: str, generator: torch.Generator | None = None) -> int:
        """A reference window for target window `row`, drawn with `generator` (torch's RNG when None)."""
        if pairing not in self.candidates:
            raise ValueError(f"pairing must be 'same_scene' or 'cross_scene'; got {pairing!r}")
        cands = self.candidates[pairing][row]
        if len(cands) == 0:
            me = self.index.iloc[row]
            raise ValueError(f"window {me['clip_id']}#{me['window']} has no {pairing} reference")
        return int(cands[int(torch.randint(len(cands), (1,), generator=generator))])

    def with_previous(self, row: int) -> int:
        """`row` if its clip has a window before it, else the clip's next window (a motion step's target)."""
        if self.previous[row] >= 0:
            return row
        nxt = np.flatnonzero(self.previous == row)
        if len(nxt) == 0:
            me = self.index.iloc[row]
            raise ValueError(f"clip {me['clip_id']} has one window: no motion latents to train with")
        return int(nxt[0])

    def batch(self, targets: list[int], refs: list[int], motion_frames: int = 0, reference: str = "video",
              device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:  # fmt: skip
        """Model inputs for a batch: x0, mask (B, 1, F', h, w), background, reference, audio windows;
        with `motion_frames`, "motion" (B, C, motion_frames, h, w): the last latent frames of each
        target's previous window (every target must have one: see `with_previous`).

        reference="image" (the image-reference baseline) keeps latent frame 0 of each reference window,
        which the causal VAE computes from the window's first frame alone, exactly as it encodes a
        single image, and no reference audio. Every tensor is on `device` (the accelerator's)."""
        if reference not in ("video", "image"):
            raise ValueError(f"reference must be 'video' or 'image'; got {reference!r}")
        t = self.tensors
        x0 = t["latent"][targets].float()  # (B, C, F', h, w)
        mask = t["mask"][targets].float()  # (B, 1, F', h, w)
        ref = t["latent"][refs].float()
        out = {
            "x0": x0, "mask": mask, "background": masked_background(x0, mask),
            "reference": ref if reference == "video" else ref[:, :, :1], "audio": t["audio"][targets].float(),
            "reference_audio": t["audio"][refs].float() if reference == "video" else None,
            "text": self.text.expand(len(targets), -1, -1),
        }  # fmt: skip
        if motion_frames > 0:
            prev = self.previous[targets]
            if (prev < 0).any():
                raise ValueError("a motion batch needs targets that have a previous window")
            out["motion"] = t["latent"][prev][:, :, -motion_frames:].float()
        return {k: v.to(device) if v is not None else None for k, v in out.items()}


def rng(*key: int) -> torch.Generator:
    """A generator seeded from integers (seed, step, sample, ...): the same draw on any rank."""
    h = 0
    for k in key:
        h = (h * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(h)


def predict(model, x: torch.Tensor, timestep: torch.Tensor, b: dict, keep_ratio: float = 1.0, use_ref: bool = True,
            use_audio: bool = True) -> torch.Tensor:  # fmt: skip
    """The velocity the model predicts for noisy latents x (B, C, F', h, w) at `timestep` (B,), conditioned
    on batch `b` from `LatentCache.batch` (its motion latents too, when it has them)."""
    return model(
        x, timestep, b["text"], background=b["background"], background_mask=b["mask"],
        reference=b["reference"] if use_ref else None, audio=b["audio"] if use_audio else None,
        reference_audio=b["reference_audio"] if use_ref and use_audio and b["reference_audio"] is not None else None, keep_ratio=keep_ratio,
        motion=b.get("motion"),
    )  # fmt: skip


def flow_loss(model, b: dict, cfg: FlowStageConfig, keep_ratio: float, use_ref: bool, use_audio: bool,
              generators: list[torch.Generator]) -> torch.Tensor:  # fmt: skip
    """Velocity error at a random noise level (clean-latent error for a "sample" model), weighted up
    inside the person mask.

    One generator per sample draws its noise level and noise, and the loss is the mean of
    per-sample weighted means, so a global batch split over ranks gives the same loss and
    gradient as one process.
    """
    x0 = b["x0"]
    # drawn on the CPU generators, then moved: the same numbers on any device
    sigma = torch.cat([flow.sample_sigmas(1, cfg.shift, generator=g) for g in generators]).to(x0.device)  # (B,)
    noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g) for g in generators]).to(x0.device)
    x = flow.interpolate(x0, noise, sigma)
    pred = predict(model, x, sigma * flow.NUM_TRAIN_TIMESTEPS, b, keep_ratio, use_ref, use_audio)
    target, weight = flow.velocity_target(x0, noise), 1.0 + cfg.person_weight * b["mask"]
    if getattr(model, "module", model).config.prediction == "sample":  # the error of the clean latent, not of x0 / sigma
        pred, target = flow.sample_from_velocity(x, pred, sigma), x0
    return torch.stack([flow.loss(pred[i], target[i], weight[i]) for i in range(len(x0))]).mean()


def _pairing(cfg: FlowStageConfig, g: torch.Generator) -> str:
    """The pairing of one sample: cfg.pairing, or same_scene for a share `same_scene_share` of a cross-scene
    stage's samples (drawn only when that share is set, so other runs keep their random streams)."""
    if cfg.pairing == "cross_scene" and cfg.same_scene_share > 0 and float(torch.rand(1, generator=g)) < cfg.same_scene_share:
        return "same_scene"
    return cfg.pairing


def _cross_or_same(cache: LatentCache, row: int, g: torch.Generator) -> int:
    try:
        return cache.reference_for(row, "cross_scene", g)
    except ValueError:  # a bench identity filmed in one scene only
        return cache.reference_for(row, "same_scene", g)


@torch.no_grad()
def validation_loss(model, cache: LatentCache, cfg: FlowStageConfig, device: torch.device | str = "cpu") -> float:
    """Flow loss on bench windows with cross-scene references, fixed noise: comparable across runs."""
    g = torch.Generator().manual_seed(1234)
    rows = cache.rows("bench")
    if len(rows) == 0:
        return float("nan")
    losses = []
    for k in range(cfg.val_batches):
        targets = [int(rows[(k * cfg.run.batch_size + i) % len(rows)]) for i in range(cfg.run.batch_size)]
        refs = [_cross_or_same(cache, r, g) for r in targets]
        gens = [rng(4321, k, i) for i in range(len(targets))]
        losses.append(flow_loss(model, cache.batch(targets, refs, reference=cfg.reference, device=device), cfg, 1.0, True, True, gens).item())
    return float(np.mean(losses))


class CodecMismatch(ValueError):
    """Init weights trained in another latent space than the stage's codec makes."""


def check_same_codec(init: str | Path, vae: str | Path) -> None:
    """Refuse to fine-tune weights from pipeline folder `init` on latents of codec folder `vae` unless
    `init/vae` is that very codec: a transformer only makes sense in the latent space it learned."""
    theirs, ours = Path(init) / "vae" / "model.safetensors", Path(vae) / "model.safetensors"
    if theirs.is_file() and ours.is_file() and sha256(theirs) != sha256(ours):
        raise CodecMismatch(f"{init} was trained with another codec than {vae} (their model.safetensors differ): "
                            f"take its codec (codec.init: {Path(init) / 'vae'}) and rebuild the latents, or train without init")  # fmt: skip


def saved_generate(root: TAVRConfig, reference: str) -> GenerateConfig:
    """The inference config a stage saves: chunks of one cache window, and a reference of one
    window (video) or of one frame without audio (image)."""
    window = root.latents.window_frames
    if reference == "image":
        return dataclasses.replace(root.generate, chunk_frames=window, reference_frames=1, min_reference_frames=1,
                                   reference_audio=False)  # fmt: skip
    return dataclasses.replace(root.generate, chunk_frames=window, reference_frames=window)


def train(cfg: FlowStageConfig, root: TAVRConfig, config_dict: dict, resume: str | None = "auto",
          stop_after: int | None = None) -> dict:
    """Train to `cfg.run.steps`; `stop_after` ends this invocation early (at a checkpoint boundary, for
    preemptible jobs and tests), returning {} so a later call with `resume="auto"` carries on."""
    run = cfg.run
    start = time.perf_counter()
    if cfg.interpolate < 1 and not cfg.init:
        raise ConfigError(f"interpolate: {cfg.interpolate} mixes the trained weights with the init's, and init is empty")
    # setup, run dir and config dump
    resume = common.fresh_if_changed(cfg.run_dir, resume, config_dict)
    accelerator = common.make_accelerator(run, cfg.run_dir)
    common.seed_everything(run.seed)
    common.RunDir(cfg.run_dir, config_dict, accelerator)

    # model: fresh, or the weights of the base or the previous stage (trained in the same latent space)
    if cfg.init:
        check_same_codec(cfg.init, cfg.vae)
        model = TAVRPipeline.from_pretrained(cfg.init).transformer
    else:
        model = TAVRTransformer3DModel(root.model)
    cache = LatentCache(cfg.cache)
    channels = cache.tensors["latent"].shape[1]
    if channels != model.config.in_channels:
        raise ValueError(f"{cfg.cache} holds {channels}-channel latents but the transformer takes {model.config.in_channels}: "
                         "set model.in_channels and model.out_channels to the codec's z_dim")
    rows = cache.rows("train")
    motion_frames = root.generate.motion_frames if cfg.motion_prob > 0 else 0
    order = common.EpochShuffler(len(rows), run.batch_size, run.seed, accelerator.process_index, accelerator.num_processes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    scheduler = common.make_lr_schedule(optimizer, run)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = common.EMA(accelerator.unwrap_model(model), run.ema_decay)

    step, prior_seconds = 0, 0.0  # seconds spent by earlier invocations of a resumed run
    ckpt = common.resume_from(cfg.run_dir, resume)
    if ckpt is not None:
        step, data_state = common.load_checkpoint(ckpt, model, optimizer, scheduler, ema, accelerator=accelerator)
        order.load_state_dict(data_state)
        prior_seconds = float(data_state.get("seconds", 0.0))
    tracker = common.Tracker(run, cfg.run_dir, config_dict, accelerator, resume_step=step if ckpt else None)
    bar = common.progress(run.steps, step, disable=not accelerator.is_main_process)

    # loop
    losses: list[float] = []
    model.train()
    while step < run.steps:
        for m in range(run.grad_accum):
            with accelerator.accumulate(model):
                micro = step * run.grad_accum + m  # keys every random draw of this micro-batch
                targets = [int(rows[i]) for i in next(order)]
                offset = accelerator.process_index * run.batch_size  # place of this rank's samples in the global batch
                gens = [rng(run.seed, micro, offset + i) for i in range(len(targets))]
                g = rng(run.seed, micro, -1)  # per-step choices, identical on every rank
                keep = float(torch.empty(1).uniform_(cfg.min_keep_ratio, 1.0, generator=g))
                use_ref = bool(torch.rand(1, generator=g) >= cfg.drop_reference)
                use_audio = bool(torch.rand(1, generator=g) >= cfg.drop_audio)
                motion = motion_frames if bool(torch.rand(1, generator=g) < cfg.motion_prob) else 0
                if motion:  # continue a clip: targets with a window before them, whose end is the motion
                    targets = [cache.with_previous(r) for r in targets]
                refs = [cache.reference_for(r, _pairing(cfg, gn), gn) for r, gn in zip(targets, gens)]
                b = cache.batch(targets, refs, motion, cfg.reference, device=accelerator.device)
                loss = flow_loss(model, b, cfg, keep, use_ref, use_audio, gens)
                accelerator.backward(loss)
                common.clip_and_step(accelerator, model, optimizer, scheduler, run.grad_clip)
        step += 1
        ema.update(accelerator.unwrap_model(model), step)
        loss = accelerator.reduce(loss.detach(), "mean")  # the global batch's loss, as one process sees it
        losses.append(loss.item())
        bar.update(loss.item(), run.batch_size * run.grad_accum * accelerator.num_processes)
        if step % run.log_every == 0 or step == run.steps:
            tracker.log(step, {"loss": float(np.mean(losses[-run.log_every :])), "lr": scheduler.get_last_lr()[0]})
        data_state = {**order.state_dict(), "seconds": prior_seconds + time.perf_counter() - start}
        if common.after_step(run, cfg.run_dir, step, model, optimizer, scheduler, ema, data_state, accelerator, stop_after):
            bar.close()
            tracker.close()
            return {}
    bar.close()

    # EMA weights -> pipeline folder, with the validation loss
    metrics = {}
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        ema.copy_to(final)
        if cfg.interpolate < 1:  # part of the way back to the init: keeps what the init could do (docs/TRAINING.md)
            common.interpolate_weights(final, load_weights(Path(cfg.init) / "transformer" / "model.safetensors"), cfg.interpolate)
        final.eval()
        generate, vae = saved_generate(root, cfg.reference), load_vae(cfg.vae).to(accelerator.device)
        save_pipeline(cfg.out, final, vae, generate)
        # a resumed run saw only part of the losses: read the whole curve from its log then
        first, last = common.first_last(losses if ckpt is None else common.logged_series(cfg.run_dir, "loss"))
        metrics = {
            "steps": step, "loss_first": first, "loss_last": last,
            "val_loss": validation_loss(final, cache, cfg, accelerator.device),
            # the pipeline (and its encoders' packages) only when there is something to score
            **(identity_heldout(TAVRPipeline(final, vae, generate), cfg.heldout) if cfg.heldout.count > 0 else {}),
        }  # fmt: skip
        metrics["seconds"] = prior_seconds + time.perf_counter() - start
        write_json(Path(cfg.out) / "metrics.json", metrics, indent=1, newline=False)  # curves stay per step
    tracker.close()
    accelerator.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None, section: str = "stage1") -> None:
    root, resume, section = common.stage_args(f"{section}: flow-matching training on the latent cache.", argv, section)
    cfg = getattr(root, section)
    config_dict = {section: to_dict(cfg), "model": to_dict(root.model)}
    try:
        metrics = train(cfg, root, config_dict, resume)
    except (CodecMismatch, ConfigError) as e:
        sys.exit(f"error: {e}")
    if metrics:
        print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
