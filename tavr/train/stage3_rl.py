"""Stage 3: Flow-GRPO reinforcement learning on identity and lip-sync rewards, from stage 2.

    python -m tavr.train.stage3_rl [--params params.yaml] [--resume auto|never|PATH]

Each step:
  1. rollout: `batch_size` conditions (a train window, a cross-scene reference, its audio
     and background from the latent cache), `group_size` samples each, drawn with the
     SDE sampler of tavr.rl.grpo from noise seeded by the condition (the same group noise
     each time the fixed pool comes back to it); the log-probability of every transition is kept.
  2. reward: the samples are decoded and scored against the reference clip's frames and
     the target window's audio (tavr.rl.rewards: identity, lip sync and the dense face score,
     weights in params); advantages are normalised within each group. A step in which no
     sample differs from its group (every advantage 0) makes no update.
  3. update: a random `train_timesteps` of the sampler's steps get a gradient, split into
     `updates_per_rollout` optimizer updates; the loss is the clipped ratio objective
     plus `kl_weight` x the KL to the stage-2 model (a frozen copy, or the base weights
     under LoRA).
Writes

    out/                          a pipeline folder (TAVRPipeline.from_pretrained); LoRA merged in
    out/metrics.json              steps, reward_first/last (means over the first/last quarter of steps),
                                  steps_updated, identity_heldout, seconds
    run_dir/checkpoints/, dvclive/ (reward_mean, reward_std, identity, lipsync, kl, ...), wandb/
"""

from __future__ import annotations

import copy
import functools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tavr import flow
from tavr.config import RLStageConfig, TAVRConfig, to_dict
from tavr.data.video import read_audio, read_video
from tavr.eval.heldout import identity_heldout
from tavr.files import write_json
from tavr.pipeline import TAVRPipeline, to_frames
from tavr.rl import grpo, lora
from tavr.rl.rewards import combined
from tavr.train import common
from tavr.train.stage1 import LatentCache, predict, rng


class ClipMedia:
    """Pixel frames and audio of cache windows, read from the clips (a few clips held in memory)."""

    def __init__(self, manifest: str | Path, index: pd.DataFrame, window: int, fps: int, audio_rate: int):
        self.root, self.index, self.window, self.fps, self.rate = Path(manifest).parent, index, window, fps, audio_rate
        self.audio_path = pd.read_parquet(manifest).set_index("clip_id")["audio_path"]

    @functools.lru_cache(maxsize=64)
    def frames(self, row: int) -> np.ndarray:
        """(window, H, W, 3) uint8 frames of cache row `row`."""
        w = self.index.iloc[row]
        return read_video(self.root / w["path"]).frames[w["start_frame"] : w["start_frame"] + self.window]

    @functools.lru_cache(maxsize=64)
    def audio(self, row: int) -> np.ndarray:
        """(window / fps * audio_rate,) float32 audio of cache row `row`."""
        w = self.index.iloc[row]
        audio = read_audio(self.root / self.audio_path[w["clip_id"]], self.rate)
        hop = self.rate / self.fps
        return audio[round(w["start_frame"] * hop) : round((w["start_frame"] + self.window) * hop)]


def condition_pool(rows: np.ndarray, conditions: int, seed: int) -> np.ndarray:
    """The train windows stage 3 draws its conditions from: all of them (`conditions` 0), or a fixed
    pool of `conditions` drawn once from `seed`, which the epoch shuffler then cycles, so that early
    and late steps score the same windows and a rise of the reward is the model's, not the draw's."""
    if conditions <= 0:
        return rows
    if conditions > len(rows):
        raise ValueError(f"stage 3 conditions ({conditions}) exceeds the {len(rows)} train windows")
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:conditions].numpy()]


def make_reward(cfg: RLStageConfig):
    named = (("identity", cfg.identity_weight), ("lipsync", cfg.lipsync_weight), ("face", cfg.face_weight))
    weights = {k: w for k, w in named if w != 0}
    if not weights:
        raise ValueError("stage3: every reward weight is 0; set identity_weight, lipsync_weight or face_weight")
    kwargs = {"identity": {"frames": cfg.identity_frames}, "lipsync": {"max_lag": cfg.lipsync_max_lag},
              "face": {"frames": cfg.identity_frames}}  # fmt: skip
    return combined(weights, **{k: v for k, v in kwargs.items() if k in weights})


def _forward(model, x: torch.Tensor, sigma: float, b: dict) -> torch.Tensor:
    """The velocity at noise level `sigma` (one for the batch) with every condition and all reference tokens."""
    return predict(model, x, torch.full((x.shape[0],), sigma * flow.NUM_TRAIN_TIMESTEPS, device=x.device), b)


@torch.no_grad()
def rollout(model, b: dict, sigmas: torch.Tensor, cfg: RLStageConfig, generators: list[torch.Generator]) -> dict:
    """SDE samples for batch `b` (B conditions, already repeated per group member).

    Returns xs (T + 1, B, C, F', h, w): the states from noise to the sample; logp (T, B). The noise
    is drawn on the CPU generators and moved to the batch's device: the same samples on any device.
    """
    shape, device = b["x0"].shape[1:], b["x0"].device
    x = torch.cat([torch.randn((1, *shape), generator=g) for g in generators]).to(device)
    xs, logps = [x], []
    for j in range(len(sigmas) - 1):
        s, s_next = float(sigmas[j]), float(sigmas[j + 1])
        mean = grpo.sde_mean(x, _forward(model, x, s, b), s, s_next, cfg.noise_level, cfg.sigma_cap)
        std = grpo.step_std(s, s_next, cfg.noise_level, cfg.sigma_cap)
        eps = torch.cat([torch.randn((1, *shape), generator=g) for g in generators]).to(device)
        x = mean + std * eps
        xs.append(x)
        logps.append(grpo.log_prob(x, mean, std))
    return {"xs": torch.stack(xs), "logp": torch.stack(logps)}


def advantages(scores: np.ndarray, group_size: int, clip: float, device: torch.device | str) -> torch.Tensor:
    """Rewards (B * group_size,) of consecutive groups -> advantages (B * group_size,) on `device`,
    normalised within each group and clipped to [-clip, clip]."""
    groups = torch.arange(len(scores) // group_size).repeat_interleave(group_size)
    return grpo.group_advantages(torch.from_numpy(scores), groups).clamp(-clip, clip).to(device)


def step_loss(model, reference, b: dict, roll: dict, j: int, sigmas: torch.Tensor, adv: torch.Tensor,
              cfg: RLStageConfig) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """The loss of sampler step j: clipped policy objective + kl_weight * KL to the reference model;
    and its parts as detached 0-d tensors (read with float() where they are logged)."""
    s, s_next = float(sigmas[j]), float(sigmas[j + 1])
    x, x_next = roll["xs"][j], roll["xs"][j + 1]
    std = grpo.step_std(s, s_next, cfg.noise_level, cfg.sigma_cap)
    mean = grpo.sde_mean(x, _forward(model, x, s, b), s, s_next, cfg.noise_level, cfg.sigma_cap)
    policy, clipped = grpo.clipped_loss(grpo.log_prob(x_next, mean, std), roll["logp"][j], adv, cfg.clip_range)
    with torch.no_grad():
        mean_ref = grpo.sde_mean(x, reference(x, s, b), s, s_next, cfg.noise_level, cfg.sigma_cap)
    kl = grpo.kl(mean, mean_ref, std).mean()
    return policy + cfg.kl_weight * kl, {"policy_loss": policy.detach(), "kl": kl.detach(), "clip_frac": clipped.detach()}


def train(cfg: RLStageConfig, root: TAVRConfig, config_dict: dict, resume: str | None = "auto",
          stop_after: int | None = None) -> dict:
    """RL to `cfg.run.steps`; `stop_after` ends this invocation early (as in stage 1)."""
    run, start = cfg.run, time.perf_counter()
    if cfg.group_size < 2:
        raise ValueError(f"stage3.group_size must be at least 2 (advantages compare samples); got {cfg.group_size}")
    if cfg.train_timesteps < 1 or cfg.updates_per_rollout < 1 or cfg.noise_level <= 0:
        raise ValueError("stage3 needs train_timesteps >= 1, updates_per_rollout >= 1 and noise_level > 0 "
                         f"(got {cfg.train_timesteps}, {cfg.updates_per_rollout}, {cfg.noise_level})")
    resume = common.fresh_if_changed(cfg.run_dir, resume, config_dict)
    accelerator = common.make_accelerator(run, cfg.run_dir)
    common.seed_everything(run.seed)
    common.RunDir(cfg.run_dir, config_dict, accelerator)

    # policy from stage 2; the KL reference is a frozen copy, or the base weights under LoRA
    init = TAVRPipeline.from_pretrained(cfg.init)
    model, vae = init.transformer, init.vae
    if (init.config.reference_frames == 1) != (cfg.reference == "image"):
        raise ValueError(f"{cfg.init} takes a reference of {init.config.reference_frames} frame(s), "
                         f"but this stage's reference is {cfg.reference!r}")
    if cfg.lora_rank > 0:
        lora.add_lora(model, cfg.lora_rank, cfg.lora_alpha)
        ref_model = None
    else:
        ref_model = copy.deepcopy(model).requires_grad_(False).eval()

    def reference(x, s, b):
        if ref_model is not None:
            with accelerator.autocast():  # the copy was made before prepare, so it has no autocast of its own
                return _forward(ref_model, x, s, b)
        with lora.lora_disabled(model):
            return _forward(model, x, s, b)

    cache = LatentCache(cfg.cache)
    window = root.latents.window_frames
    media = ClipMedia(cfg.manifest, cache.index, window, root.generate.fps, root.generate.audio_rate)
    reward_fn = make_reward(cfg)
    rows = cache.rows("train")
    if 0 < cfg.conditions < run.batch_size * accelerator.num_processes:
        raise ValueError(f"stage 3 conditions ({cfg.conditions}) must be 0 or at least one global batch "
                         f"({run.batch_size} x {accelerator.num_processes} processes)")  # fmt: skip
    rows = condition_pool(rows, cfg.conditions, run.seed)
    order = common.EpochShuffler(len(rows), run.batch_size, run.seed, accelerator.process_index, accelerator.num_processes)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=run.lr, weight_decay=run.weight_decay)
    scheduler = common.make_lr_schedule(optimizer, run)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device  # prepare moved the policy; the frozen copy and the decoder go along
    vae.to(device)
    if ref_model is not None:
        ref_model.to(device)
    ema = common.EMA(accelerator.unwrap_model(model), run.ema_decay)
    sigmas = grpo.sigmas(cfg.sample_steps, cfg.shift)
    n_train = min(cfg.train_timesteps, cfg.sample_steps)

    step, prior_seconds, updates = 0, 0.0, 0  # updates: steps that changed the weights (the others had no signal)
    ckpt = common.resume_from(cfg.run_dir, resume)
    if ckpt is not None:
        step, data_state = common.load_checkpoint(ckpt, model, optimizer, scheduler, ema, accelerator=accelerator)
        order.load_state_dict(data_state)
        prior_seconds = float(data_state.get("seconds", 0.0))
        updates = data_state.get("updates")  # None: a checkpoint from before the count, which stays unknown
    tracker = common.Tracker(run, cfg.run_dir, config_dict, accelerator, resume_step=step if ckpt else None)
    bar = common.progress(run.steps, step, disable=not accelerator.is_main_process)

    rewards: list[float] = []
    while step < run.steps:
        # 1. rollout: batch_size conditions x group_size samples
        targets = [int(rows[i]) for i in next(order)]
        # a condition's reference and noise are keyed by the condition, not the step: each time the pool
        # cycles back to it, its group is drawn from the same noise, so a change of reward between the
        # first and last quarter of steps is the policy's, not the draw's (common random numbers)
        refs = [cache.reference_for(r, cfg.pairing, rng(run.seed, r, -1)) for r in targets]
        g = cfg.group_size
        b = cache.batch([t for t in targets for _ in range(g)], [r for r in refs for _ in range(g)], reference=cfg.reference,
                        device=device)  # fmt: skip
        gens = [rng(run.seed, t, k) for t in targets for k in range(g)]
        model.eval()
        roll = rollout(model, b, sigmas, cfg, gens)

        # 2. rewards -> group advantages
        with torch.no_grad():
            decoded = vae.decode(roll["xs"][-1])  # one batched call for the whole group
            videos = [to_frames(decoded[i : i + 1]) for i in range(len(gens))]
        cond = {"reference_frames": [media.frames(r) for r in refs for _ in range(g)],
                "audio": [media.audio(t) for t in targets for _ in range(g)],
                "audio_rate": root.generate.audio_rate, "fps": root.generate.fps}  # fmt: skip
        scores, info = reward_fn(videos, cond)
        adv = advantages(scores, g, cfg.adv_clip, device)

        # 3. updates over disjoint random subsets of the sampler steps; none when no sample beat its
        # group (every advantage 0): Adam's momentum alone would still move the weights, off the signal
        model.train()
        chosen = torch.randperm(cfg.sample_steps, generator=rng(run.seed, step, -2))[:n_train].tolist()
        signal = bool(accelerator.reduce(adv.abs().max().reshape(1), "max").item() > 0)  # every rank decides alike
        logs: list[dict] = []
        for part in np.array_split(np.array(chosen), max(1, min(cfg.updates_per_rollout, n_train))) if signal else []:
            for j in part.tolist():
                loss, parts = step_loss(model, reference, b, roll, j, sigmas, adv, cfg)
                accelerator.backward(loss / len(part))
                logs.append(parts)
            common.clip_and_step(accelerator, model, optimizer, scheduler, run.grad_clip)
        updates = None if updates is None else updates + int(signal)
        step += 1
        ema.update(accelerator.unwrap_model(model), step)

        mean_reward = float(accelerator.reduce(torch.tensor(float(scores.mean()), device=device), "mean"))
        rewards.append(mean_reward)
        bar.update(mean_reward, len(gens) * accelerator.num_processes)
        if step % run.log_every == 0 or step == run.steps:
            metrics = {"reward_mean": mean_reward, "reward_std": float(scores.std()), "lr": scheduler.get_last_lr()[0],
                       "updated": float(signal), **{k: float(np.mean([float(p[k]) for p in logs])) for k in (logs[0] if logs else {})}}  # fmt: skip
            metrics.update({k: float(np.mean(info[k])) for k in ("identity", "lipsync", "face") if k in info})
            if "identity/faces" in info:
                metrics["face_rate"] = float(np.mean(info["identity/faces"] > 0))
            tracker.log(step, metrics)
        data_state = {**order.state_dict(), "seconds": prior_seconds + time.perf_counter() - start, "updates": updates}
        if common.after_step(run, cfg.run_dir, step, model, optimizer, scheduler, ema, data_state, accelerator, stop_after):
            bar.close()
            tracker.close()
            return {}
    bar.close()

    metrics = {}
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        ema.copy_to(final)
        if cfg.lora_rank > 0:
            lora.merge_lora(final)
        final.eval()
        pipe = TAVRPipeline(final, vae, init.config)
        pipe.save_pretrained(cfg.out)
        first, last = common.first_last(rewards if ckpt is None else common.logged_series(cfg.run_dir, "reward_mean"), 0.25)
        metrics = {"steps": step, "reward_first": first, "reward_last": last, "steps_updated": updates,
                   **identity_heldout(pipe, cfg.heldout)}  # fmt: skip
        metrics["seconds"] = prior_seconds + time.perf_counter() - start
        write_json(Path(cfg.out) / "metrics.json", metrics, indent=1, newline=False)
    tracker.close()
    accelerator.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None) -> None:
    root, resume, section = common.stage_args("stage3: Flow-GRPO RL on identity and lip-sync rewards.", argv, "stage3")
    cfg = getattr(root, section)
    config_dict = {section: to_dict(cfg), "latents": to_dict(root.latents), "generate": to_dict(root.generate)}
    metrics = train(cfg, root, config_dict, resume)
    if metrics:
        print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
