"""tavr.train.common on a tiny MLP regression: schedule, EMA, checkpoints and exact resume, data order, tracking."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType
from torch import nn

from tavr.train.common import (
    EMA, EpochShuffler, RunConfig, RunDir, Tracker, clip_and_step, latest_checkpoint, load_checkpoint, lr_lambda,
    make_accelerator, make_lr_schedule, progress, resume_from, save_checkpoint, seed_everything,
)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


DATA_X = torch.linspace(-1, 1, 40 * 4).reshape(40, 4)
DATA_Y = DATA_X.sum(1, keepdim=True).sin()


def _build(run: RunConfig, accelerator=None):
    """Model, optimizer, scheduler, EMA and data order, as a stage would make them."""
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    scheduler = make_lr_schedule(optimizer, run)
    ema = EMA(model, run.ema_decay)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler, ema, EpochShuffler(len(DATA_X), run.batch_size, seed=run.seed)


def _train(accelerator, run, model, optimizer, scheduler, ema, sampler, start: int, stop: int) -> None:
    """Steps [start, stop); inputs jittered by torch, targets by numpy and python RNGs; dropout in the model."""
    model.train()
    for _ in range(start, stop):
        for _ in range(run.grad_accum):
            with accelerator.accumulate(model):
                idx = next(sampler)
                x = DATA_X[idx] + 0.05 * torch.randn(len(idx), 4)
                y = DATA_Y[idx] * float(np.random.uniform(0.9, 1.1)) + random.gauss(0.0, 0.01)
                accelerator.backward(F.mse_loss(model(x), y))
                clip_and_step(accelerator, model, optimizer, scheduler, run.grad_clip)
        ema.update(model)


RUN = RunConfig(steps=12, batch_size=6, grad_accum=2, lr=1e-2, weight_decay=0.01, warmup_steps=3,
                grad_clip=0.5, ema_decay=0.9, keep_checkpoints=2)


def test_lr_schedule_shapes():
    run = RunConfig(steps=110, warmup_steps=10, lr=2.0, min_lr_ratio=0.1)
    f = lr_lambda(run)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warmup
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # cosine midpoint
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # endpoint = min_lr_ratio
    after = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    constant = lr_lambda(RunConfig(steps=110, warmup_steps=10, schedule="constant"))
    assert constant(0) == pytest.approx(0.1) and constant(50) == constant(110) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda(RunConfig(schedule="linear"))

    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=run.lr)
    scheduler = make_lr_schedule(optimizer, run)
    for step in range(1, 60):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(run.lr * f(step))


def test_ema_math():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    model[1].weight.requires_grad_(False)  # frozen: not tracked
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    ema = EMA(model, decay=0.5)
    assert set(ema.shadow) == {"0.weight"} and ema.shadow["0.weight"].dtype == torch.float32
    for value, expected in [(4.0, 3.0), (5.0, 4.0), (0.0, 2.0)]:
        with torch.no_grad():
            model[0].weight.fill_(value)
        ema.update(model)
        assert ema.shadow["0.weight"].item() == expected
    ema.copy_to(model)
    assert model[0].weight.item() == 2.0

    warm = EMA(model, decay=0.999)  # with the step: the warm-up forgets the start quickly
    assert [warm.decay_at(s) for s in (0, 10, 10_000)] == [0.1, 11 / 20, 0.999] and warm.decay_at(None) == 0.999
    with torch.no_grad():
        model[0].weight.fill_(6.0)
    warm.update(model, step=1)
    assert warm.shadow["0.weight"].item() == pytest.approx(2.0 * 2 / 11 + 6.0 * 9 / 11)

    off = EMA(model, decay=0.0)  # disabled: no shadow, every call a no-op
    off.update(model)
    off.copy_to(model)
    assert off.state_dict() == {} and model[0].weight.item() == 6.0


def test_checkpoint_round_trip(tmp_path):
    seed_everything(0)
    accelerator = make_accelerator(RUN, tmp_path)
    model, optimizer, scheduler, ema, sampler = _build(RUN, accelerator)
    _train(accelerator, RUN, model, optimizer, scheduler, ema, sampler, 0, 4)
    path = save_checkpoint(tmp_path, 4, model, optimizer, scheduler, ema, data_state=sampler.state_dict(),
                           accelerator=accelerator)
    after_save = (torch.rand(3), np.random.rand(3), random.random())

    assert path == tmp_path / "checkpoints" / "step_0000004"
    assert sorted(p.name for p in path.iterdir()) == [
        "ema.safetensors", "manifest.json", "model.safetensors", "optimizer.json", "optimizer.safetensors",
        "rng.safetensors", "state.json"]  # no pickle anywhere; the manifest (sizes, sha256) is written last

    seed_everything(99)
    model2, optimizer2, scheduler2, ema2, _ = _build(RUN, accelerator)
    step, data_state = load_checkpoint(path, model2, optimizer2, scheduler2, ema2, accelerator=accelerator)
    assert (step, data_state) == (4, sampler.state_dict())
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    state, state2 = optimizer.state_dict(), optimizer2.state_dict()
    assert state["param_groups"] == state2["param_groups"]
    for i, entry in state["state"].items():
        assert set(entry) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in entry.items():
            assert torch.equal(value, state2["state"][i][key])
    assert scheduler.state_dict() == scheduler2.state_dict()
    assert all(torch.equal(ema.shadow[k], ema2.shadow[k]) for k in ema.shadow)
    assert torch.equal(torch.rand(3), after_save[0])
    assert np.array_equal(np.random.rand(3), after_save[1]) and random.random() == after_save[2]


def test_resume_is_bit_exact(tmp_path):
    seed_everything(0)
    accelerator = make_accelerator(RUN, tmp_path / "straight")
    straight = _build(RUN, accelerator)
    _train(accelerator, RUN, *straight, 0, 12)

    seed_everything(0)
    accelerator = make_accelerator(RUN, tmp_path / "resumed")
    model, optimizer, scheduler, ema, sampler = _build(RUN, accelerator)
    _train(accelerator, RUN, model, optimizer, scheduler, ema, sampler, 0, 7)
    save_checkpoint(tmp_path / "resumed", 7, model, optimizer, scheduler, ema, data_state=sampler.state_dict(),
                    accelerator=accelerator)
    del model, optimizer, scheduler, ema, sampler

    seed_everything(1234)  # a new process: different init and RNG until the checkpoint is loaded
    accelerator = make_accelerator(RUN, tmp_path / "resumed")
    model, optimizer, scheduler, ema, sampler = _build(RUN, accelerator)
    step, data_state = load_checkpoint(resume_from(tmp_path / "resumed", "auto"), model, optimizer, scheduler, ema,
                                       accelerator=accelerator)
    sampler.load_state_dict(data_state)
    _train(accelerator, RUN, model, optimizer, scheduler, ema, sampler, step, 12)

    for a, b in zip(straight[0].parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert all(torch.equal(straight[3].shadow[k], ema.shadow[k]) for k in ema.shadow)
    assert straight[2].state_dict() == scheduler.state_dict()
    assert straight[4].state_dict() == sampler.state_dict()


def test_latest_checkpoint_pruning_and_resume_from(tmp_path):
    assert latest_checkpoint(tmp_path) is None and resume_from(tmp_path, "auto") is None
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, optimizer, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000003", "step_0000004"]

    (tmp_path / "checkpoints" / "step_0000009.tmp").mkdir()  # a save killed half way
    (tmp_path / "checkpoints" / "step_0000009.tmp" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000004"
    assert resume_from(tmp_path, "auto") == tmp_path / "checkpoints" / "step_0000004"
    assert resume_from(tmp_path, None) is None and resume_from(tmp_path, "never") is None
    assert resume_from(tmp_path, str(tmp_path / "checkpoints" / "step_0000003")).name == "step_0000003"
    with pytest.raises(FileNotFoundError):
        resume_from(tmp_path, str(tmp_path / "checkpoints" / "step_0000009.tmp"))

    save_checkpoint(tmp_path, 4, model, optimizer, keep=2)  # the same step again replaces it
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000003", "step_0000004"]
    assert load_checkpoint(latest_checkpoint(tmp_path), model, optimizer) == (4, {})


def test_epoch_shuffler_order_resume_and_ranks():
    sampler = EpochShuffler(20, 3, seed=5)  # 6 batches per epoch, 2 items dropped
    epoch0 = [next(sampler) for _ in range(6)]
    flat = sum(epoch0, [])
    assert len(set(flat)) == 18 and all(0 <= i < 20 for i in flat)
    assert sampler.state_dict() == {"epoch": 0, "position": 6}
    assert next(sampler) != epoch0[0] and sampler.state_dict() == {"epoch": 1, "position": 1}
    assert [next(EpochShuffler(20, 3, seed=5)) for _ in range(1)] == epoch0[:1]  # deterministic from the seed

    first = EpochShuffler(20, 3, seed=5)
    for _ in range(10):
        next(first)
    resumed = EpochShuffler(20, 3, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [next(resumed) for _ in range(10)] == [next(first) for _ in range(10)]

    ranks = [EpochShuffler(20, 3, seed=5, rank=r, world=2) for r in range(2)]
    single = EpochShuffler(20, 6, seed=5)
    for _ in range(8):  # crosses epochs (3 global batches each)
        parts = [next(r) for r in ranks]
        assert len(parts[0]) == len(parts[1]) == 3
        assert next(single) == parts[0] + parts[1]
    with pytest.raises(ValueError):
        EpochShuffler(5, 3, world=2)


def _logged_steps(run_dir) -> list[int]:
    header, *rows = (run_dir / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    col = header.split("\t").index("step")
    return [int(r.split("\t")[col]) for r in rows]


def test_tracker_dvclive_only_and_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = RunConfig(tracker="none")
    tracker = Tracker(run, tmp_path, {"run": {"steps": 5}})
    for step in (5, 10, 15):
        tracker.log(step, {"loss": 1.0 / step, "lr": 1e-4})
    tracker.close()
    assert tracker.wandb_run is None and not (tmp_path / "wandb").exists()
    assert _logged_steps(tmp_path) == [5, 10, 15]
    assert (tmp_path / "dvclive" / "plots" / "metrics" / "lr.tsv").is_file()

    tracker = Tracker(run, tmp_path, {}, resume_step=10)  # crashed after logging 15, resumed from 10
    for step in (15, 20):
        tracker.log(step, {"loss": 1.0 / step})
    tracker.close()
    assert _logged_steps(tmp_path) == [5, 10, 15, 20]


def test_tracker_wandb_offline_and_disabled(tmp_path, monkeypatch):
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    RunDir(run_dir, {"lr": 1e-4})
    assert json.loads((run_dir / "config.json").read_text()) == {"lr": 1e-4}
    assert (run_dir / "checkpoints").is_dir()
    tracker = Tracker(RunConfig(), run_dir, {"lr": 1e-4})
    assert tracker.wandb_run is not None
    for step in (1, 2):
        tracker.log(step, {"loss": 0.5 * step})
    tracker.close()
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert _logged_steps(run_dir) == [1, 2]

    monkeypatch.setenv("WANDB_MODE", "disabled")
    other = tmp_path / "disabled"
    tracker = Tracker(RunConfig(), other, {})
    tracker.log(1, {"loss": 1.0})
    tracker.close()
    assert tracker.wandb_run is None and not (other / "wandb").exists()
    assert _logged_steps(other) == [1]


def test_accelerator_and_progress(tmp_path):
    accelerator = make_accelerator(RunConfig(grad_accum=3), tmp_path)
    assert accelerator.num_processes == 1 and accelerator.gradient_accumulation_steps == 3
    assert accelerator.distributed_type == DistributedType.NO
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fsdp"):
            make_accelerator(RunConfig(fsdp=True), tmp_path)
    bar = progress(total=4, initial=1)
    bar.update(loss=0.25, samples=8)
    assert bar.bar.n == 2 and "loss=0.2500" in str(bar.bar) and "samples_s=" in str(bar.bar)
    bar.close()
    progress(total=4, disable=True).update(loss=0.25, samples=8)  # non-main processes: silent


def test_tracker_survives_a_git_repo_without_commits(tmp_path, monkeypatch):
    """dvclive fails in a fresh `git init` (no commits); the same TSV layout is written directly."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from tavr.config import RunConfig
    from tavr.train.common import Tracker

    tracker = Tracker(RunConfig(tracker="none"), tmp_path / "run", {})
    for step in (1, 2, 3):
        tracker.log(step, {"loss": 1.0 / step})
    tracker.close()
    rows = (tmp_path / "run/dvclive/plots/metrics/loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss"]  # the header dvclive itself writes
    assert [int(r.split("\t")[0]) for r in rows[1:]] == [1, 2, 3]
    from tavr.train.common import first_last, logged_series

    assert logged_series(tmp_path / "run", "loss") == [1.0, 0.5, 1.0 / 3]
    assert first_last([1.0] * 10 + [0.0] * 10) == (1.0, 0.0)


def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path):
    """A truncated or altered file in the newest checkpoint: resume falls back to the one before, saying so."""
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (2, 4):
        save_checkpoint(tmp_path, step, model, optimizer, keep=2)
    newest = tmp_path / "checkpoints" / "step_0000004"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # a copy or a disk that ran out half way
    with pytest.warns(UserWarning, match="step_0000004 is damaged"):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000002"
    with pytest.warns(UserWarning, match="damaged"):
        assert load_checkpoint(resume_from(tmp_path, "auto"), model, optimizer)[0] == 2

    save_checkpoint(tmp_path, 4, model, optimizer, keep=2)  # same length, other bytes: only the hash tells
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert latest_checkpoint(tmp_path) == newest  # sizes alone cannot see it...
    with pytest.warns(UserWarning, match="sha256"):
        assert resume_from(tmp_path, "auto").name == "step_0000002"  # ...the resume checks hashes
    with pytest.raises(ValueError, match="damaged"):
        resume_from(tmp_path, str(newest))


def test_a_checkpoint_from_before_manifests_is_checked_by_its_headers(tmp_path):
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path, 3, model, optimizer)
    (path / "manifest.json").unlink()
    assert latest_checkpoint(tmp_path) == path
    opt = path / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    with pytest.warns(UserWarning, match="optimizer.safetensors is truncated"):
        assert latest_checkpoint(tmp_path) is None


def test_a_longer_run_continues_and_another_config_moves_the_old_run_aside(tmp_path):
    from tavr.train.common import fresh_if_changed

    run_dir = tmp_path / "run"
    config = {"stage": {"run": {"steps": 20, "lr": 1e-3, "checkpoint_every": 5}, "out": "a"}}
    RunDir(run_dir, config)
    (run_dir / "checkpoints" / "keep.txt").write_text("mine")
    longer = {"stage": {"run": {"steps": 30, "lr": 1e-3, "checkpoint_every": 10}, "out": "b"}}
    assert fresh_if_changed(run_dir, "auto", longer) == "auto"
    assert (run_dir / "checkpoints" / "keep.txt").is_file()
    other = {"stage": {"run": {"steps": 20, "lr": 3e-4, "checkpoint_every": 5}, "out": "a"}}
    with pytest.warns(UserWarning, match="moved it to"):
        assert fresh_if_changed(run_dir, "auto", other) is None
    assert (tmp_path / "run.previous-1" / "checkpoints" / "keep.txt").read_text() == "mine"
    assert not run_dir.exists()
    RunDir(run_dir, config)
    with pytest.warns(UserWarning):
        fresh_if_changed(run_dir, "auto", other)
    assert (tmp_path / "run.previous-2" / "config.json").is_file()  # never over an earlier one
    # shorter than a checkpoint already reached: its weights trained longer than asked, so not a continuation
    RunDir(run_dir, config)
    model = _mlp()
    save_checkpoint(run_dir, 12, model, torch.optim.AdamW(model.parameters()))
    shorter = {"stage": {"run": {"steps": 10, "lr": 1e-3, "checkpoint_every": 5}, "out": "a"}}
    assert fresh_if_changed(run_dir, "auto", {"stage": {"run": {"steps": 12, "lr": 1e-3, "checkpoint_every": 5}, "out": "a"}}) == "auto"
    with pytest.warns(UserWarning, match="moved it to"):
        assert fresh_if_changed(run_dir, "auto", shorter) is None
    RunDir(run_dir, shorter)  # the same config written over a folder whose checkpoint went further
    save_checkpoint(run_dir, 12, model, torch.optim.AdamW(model.parameters()))
    with pytest.warns(UserWarning, match="moved it to"):
        assert fresh_if_changed(run_dir, "auto", shorter) is None
