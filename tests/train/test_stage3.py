"""Stage 3 (Flow-GRPO) on the tiny data set: it runs, logs rewards, resumes exactly, supports LoRA."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tavr.config import FlowStageConfig, HeldoutConfig, RLStageConfig, RunConfig, TAVRConfig
from tavr.eval.heldout import identity_heldout
from tavr.pipeline import TAVRPipeline
from tavr.train import common, stage1, stage3_rl


@pytest.fixture(scope="module")
def stage2_model(cache, tmp_path_factory):
    """A briefly trained transformer to start RL from (stage 1's loop, as stage 2 would be)."""
    tmp = tmp_path_factory.mktemp("stage2")
    run = RunConfig(steps=2, batch_size=2, warmup_steps=1, ema_decay=0.0, checkpoint_every=2, log_every=1, tracker="none")
    cfg = FlowStageConfig(run=run, cache=str(cache / "latents"), vae=str(cache / "codec"), out=str(tmp / "model"),
                          run_dir=str(tmp / "run"), val_batches=1, heldout=HeldoutConfig(count=0))  # fmt: skip
    stage1.train(cfg, TAVRConfig(), {})
    return tmp / "model"


def _rl_cfg(cache, clips, init, tmp, name, steps, **kw):
    run = RunConfig(steps=steps, batch_size=1, lr=1e-3, warmup_steps=0, schedule="constant", ema_decay=0.0,
                    checkpoint_every=1, log_every=1, tracker="none")  # fmt: skip
    return RLStageConfig(run=run, init=str(init), cache=str(cache / "latents"), manifest=str(clips),
                         out=str(tmp / name / "model"), run_dir=str(tmp / name / "run"), group_size=2, sample_steps=3,
                         train_timesteps=2, identity_frames=1, heldout=HeldoutConfig(count=0), **kw)  # fmt: skip


def test_stage3_logs_rewards_and_resumes_exactly(cache, clips, stage2_model, tmp_path):
    root = TAVRConfig()
    straight = _rl_cfg(cache, clips, stage2_model, tmp_path, "straight", 2, face_weight=1.0)
    metrics = stage3_rl.train(straight, root, {})
    assert metrics["steps"] == 2 and metrics["reward_first"] is not None
    log = pd.read_csv(tmp_path / "straight/run/dvclive/plots/metrics/reward_mean.tsv", sep="\t")
    assert log["step"].tolist() == [1, 2]
    kl = pd.read_csv(tmp_path / "straight/run/dvclive/plots/metrics/kl.tsv", sep="\t")["kl"]
    assert (kl >= 0).all() and kl.iloc[-1] > 0  # the policy moved away from the stage-2 model after step 1
    for name in ("reward_std", "identity", "lipsync", "face", "policy_loss", "clip_frac", "face_rate", "updated"):
        assert (tmp_path / f"straight/run/dvclive/plots/metrics/{name}.tsv").is_file(), name
    saved = json.loads((tmp_path / "straight/model/metrics.json").read_text())
    assert saved["reward_first"] == metrics["reward_first"]

    updated = pd.read_csv(tmp_path / "straight/run/dvclive/plots/metrics/updated.tsv", sep="\t")["updated"]
    assert metrics["steps_updated"] == updated.sum() >= 1  # the dense face score differed within a group
    half = _rl_cfg(cache, clips, stage2_model, tmp_path, "resumed", 2, face_weight=1.0)
    assert stage3_rl.train(half, root, {}, stop_after=1) == {}
    resumed = stage3_rl.train(half, root, {}, resume="auto")
    assert resumed["steps_updated"] == metrics["steps_updated"]  # counted across the resume
    a = load_file(str(tmp_path / "straight/model/transformer/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/model/transformer/model.safetensors"))
    start = load_file(str(stage2_model / "transformer/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], start[k]) for k in a)  # RL changed the weights


def test_stage3_draws_a_condition_from_the_same_noise_each_time(base_cache, clips, tmp_path):
    """From the shipped base (it draws faces, so the face score is dense), a pool of one condition visited
    at both steps, with a step too small to move fp32 weights: the two rollouts are the same samples, so
    their rewards agree; keyed by the step, as before, the noise and the reference differed."""
    base = Path(__file__).resolve().parents[2] / "models/base"
    cfg = _rl_cfg(base_cache, clips, base, tmp_path, "crn", 2, face_weight=1.0, conditions=1)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, lr=1e-12))
    stage3_rl.train(cfg, TAVRConfig(), {})
    log = pd.read_csv(tmp_path / "crn/run/dvclive/plots/metrics/reward_mean.tsv", sep="\t")["reward_mean"]
    spread = pd.read_csv(tmp_path / "crn/run/dvclive/plots/metrics/reward_std.tsv", sep="\t")["reward_std"]
    assert log.iloc[0] > 0 and spread.iloc[0] > 0  # a dense score, different within the group
    assert log.iloc[1] == pytest.approx(log.iloc[0], abs=1e-6)


def test_stage3_makes_no_update_without_signal(cache, clips, stage2_model, tmp_path):
    """Identity alone on a model that draws no face: every reward is 0, every advantage is 0, and the
    weights must stay the stage-2 model's (Adam's momentum would otherwise still move them)."""
    cfg = _rl_cfg(cache, clips, stage2_model, tmp_path, "flat", 2, lipsync_weight=0.0)
    metrics = stage3_rl.train(cfg, TAVRConfig(), {})
    assert metrics["reward_first"] == metrics["reward_last"] == 0.0 and metrics["steps_updated"] == 0
    a = load_file(str(tmp_path / "flat/model/transformer/model.safetensors"))
    start = load_file(str(stage2_model / "transformer/model.safetensors"))
    assert all(torch.equal(a[k], start[k]) for k in a)


def test_stage3_with_lora_saves_a_plain_pipeline(cache, clips, stage2_model, tmp_path):
    cfg = _rl_cfg(cache, clips, stage2_model, tmp_path, "lora", 1, lora_rank=2)
    stage3_rl.train(cfg, TAVRConfig(), {})
    tuned = TAVRPipeline.from_pretrained(cfg.out).transformer.state_dict()
    assert set(tuned) == set(TAVRPipeline.from_pretrained(stage2_model).transformer.state_dict())  # merged, no lora_ keys


def test_the_rl_loss_reaches_only_the_adapters_under_lora(cache, clips, stage2_model, tmp_path):
    """One step's loss with given advantages: gradients on LoRA weights only, and an unchanged policy is on-policy."""
    from tavr.rl import grpo, lora
    from tavr.train.stage1 import LatentCache, rng

    cfg = _rl_cfg(cache, clips, stage2_model, tmp_path, "loss", 1)
    model = TAVRPipeline.from_pretrained(stage2_model).transformer
    lora.add_lora(model, 2, 2.0)
    lc = LatentCache(cfg.cache)
    b = lc.batch([0, 0], [1, 1])
    sigmas = grpo.sigmas(cfg.sample_steps)
    roll = stage3_rl.rollout(model, b, sigmas, cfg, [rng(0, i) for i in range(2)])
    assert roll["xs"].shape[:2] == (cfg.sample_steps + 1, 2) and roll["logp"].shape == (cfg.sample_steps, 2)

    def reference(x, s, batch):
        with lora.lora_disabled(model):
            return stage3_rl._forward(model, x, s, batch)

    loss, parts = stage3_rl.step_loss(model, reference, b, roll, 1, sigmas, torch.tensor([1.0, -1.0]), cfg)
    loss.backward()
    assert parts["kl"] == 0.0 and parts["clip_frac"] == 0.0  # the rollout's own policy: ratio 1
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_identity_heldout_scores_bench_pairs_deterministically(clips, stage2_model):
    pipe = TAVRPipeline.from_pretrained(stage2_model)
    cfg = HeldoutConfig(pairs=str(clips.parent.parent / "bench_pairs.json"), count=2, steps=2, frames=1)
    first = identity_heldout(pipe, cfg, progress=False)
    assert first["heldout_pairs"] == 2
    assert 0.0 <= first["identity_heldout"] <= 1.0 and 0.0 <= first["heldout_face_rate"] <= 1.0
    assert identity_heldout(pipe, cfg, progress=False) == first
    assert identity_heldout(pipe, HeldoutConfig(count=0)) == {}


def test_stage3_rejects_settings_that_cannot_learn(cache, clips, stage2_model, tmp_path):
    cfg = dataclasses.replace(_rl_cfg(cache, clips, stage2_model, tmp_path, "g1", 1), group_size=1)
    with pytest.raises(ValueError, match="group_size"):
        stage3_rl.train(cfg, TAVRConfig(), {})
    cfg = dataclasses.replace(_rl_cfg(cache, clips, stage2_model, tmp_path, "t0", 1), train_timesteps=0)
    with pytest.raises(ValueError, match="train_timesteps"):
        stage3_rl.train(cfg, TAVRConfig(), {})


def test_a_condition_pool_is_fixed_and_every_epoch_cycles_all_of_it():
    rows = np.arange(100, 140)
    pool = stage3_rl.condition_pool(rows, 4, seed=0)
    assert len(set(pool.tolist())) == 4 and set(pool.tolist()) <= set(rows.tolist())
    assert np.array_equal(pool, stage3_rl.condition_pool(rows, 4, seed=0))  # the same pool on every rank and resume
    assert not np.array_equal(pool, stage3_rl.condition_pool(rows, 4, seed=1))
    assert np.array_equal(stage3_rl.condition_pool(rows, 0, seed=0), rows)
    order = common.EpochShuffler(len(pool), 2, 0, 0, 1)
    first = {int(pool[i]) for _ in range(2) for i in next(order)}
    last = {int(pool[i]) for _ in range(2) for i in next(order)}
    assert first == last == set(pool.tolist())  # two steps of 2 see the whole pool, then again
    with pytest.raises(ValueError, match="exceeds"):
        stage3_rl.condition_pool(rows, 41, seed=0)

