"""The training chain on a tiny data set: stage 0 and the cache, then stages 1 and 2, each resuming exactly."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tavr.config import CodecConfig, ConfigError, FlowStageConfig, GenerateConfig, HeldoutConfig, LatentsConfig, RunConfig, TAVRConfig
from tavr.models.vae import TAVRVAE
from tavr.pipeline import TAVRPipeline
from tavr.train import stage0_codec, stage0_vae, stage1
from tavr.train.latents import encode_cache


def test_stage0_trains_saves_and_resumes_exactly(clips, vae_cfg, tmp_path):
    straight = vae_cfg(tmp_path, clips, 4, "straight")
    metrics = stage0_vae.train(straight, {})
    assert metrics["steps"] == 4 and metrics["psnr_bench"] > 0
    assert json.loads((tmp_path / "straight/vae/metrics.json").read_text())["steps"] == 4
    # the same run stopped after 2 steps and resumed from its checkpoint ends on the same weights
    half = vae_cfg(tmp_path, clips, 4, "resumed")
    assert stage0_vae.train(half, {}, stop_after=2) == {}
    stage0_vae.train(half, {}, resume="auto")
    a, b = TAVRVAE.load(straight.out).state_dict(), TAVRVAE.load(half.out).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = pd.read_csv(tmp_path / "resumed/run/dvclive/plots/metrics/loss.tsv", sep="\t")["step"].tolist()
    assert steps == [1, 2, 3, 4]


def test_latent_cache_has_every_window(clips, tmp_path):
    codec = CodecConfig(manifest=str(clips), out=str(tmp_path / "codec"), eval_clips=0)
    stage0_codec.fit(codec)
    cfg = LatentsConfig(vae=codec.out, manifest=str(clips), out=str(tmp_path / "latents"), batch=4)
    summary = encode_cache(cfg, GenerateConfig(), progress=False)
    manifest = pd.read_parquet(clips)
    index = pd.read_parquet(tmp_path / "latents" / "index.parquet")
    assert len(index) == summary["windows"] == 5 * len(manifest)  # 50 frames -> five 9-frame windows
    cache = load_file(str(tmp_path / "latents" / "cache.safetensors"))
    assert cache["latent"].shape == (len(index), 16, 3, 16, 16) and cache["latent"].dtype == torch.float16
    assert cache["mask"].shape == (len(index), 1, 3, 16, 16) and set(cache["mask"].unique().tolist()) <= {0, 1}
    assert cache["audio"].shape == (len(index), 3, 8, 320) and torch.isfinite(cache["audio"].float()).all()
    assert 0.05 < cache["mask"].float().mean() < 0.9
    lat = cache["latent"].float()
    assert lat.mean().abs() < 0.5 and 0.3 < lat.std() < 3  # whitened by the codec fitted on these clips
    text = load_file(str(tmp_path / "latents" / "text.safetensors"))
    assert text["text"].shape[-1] == 384
    assert not (tmp_path / "latents.partial").exists()


def _flow_cfg(cache, tmp, steps, name, **kw):
    run = RunConfig(steps=steps, batch_size=2, lr=3e-4, warmup_steps=1, ema_decay=0.9, checkpoint_every=2, log_every=1, tracker="none")
    return FlowStageConfig(run=run, cache=str(cache / "latents"), vae=str(cache / "codec"), out=str(tmp / name / "model"),
                           run_dir=str(tmp / name / "run"), val_batches=1, heldout=HeldoutConfig(count=0), **kw)  # fmt: skip


def test_stage1_resumes_exactly_and_writes_a_pipeline(cache, tmp_path):
    root = TAVRConfig()
    straight = _flow_cfg(cache, tmp_path, 4, "straight")
    metrics = stage1.train(straight, root, {})
    assert metrics["steps"] == 4 and metrics["val_loss"] > 0
    half = _flow_cfg(cache, tmp_path, 4, "resumed")
    assert stage1.train(half, root, {}, stop_after=2) == {}  # stopped at the step-2 checkpoint
    stage1.train(half, root, {}, resume="auto")
    a = TAVRPipeline.from_pretrained(straight.out).transformer.state_dict()
    b = TAVRPipeline.from_pretrained(half.out).transformer.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pipe = TAVRPipeline.from_pretrained(straight.out)
    assert pipe.config.chunk_frames == 9  # generation windows match the training windows


def test_stage2_starts_from_stage1_with_cross_scene_references(cache, tmp_path):
    root = TAVRConfig()
    first = _flow_cfg(cache, tmp_path, 2, "s1")
    stage1.train(first, root, {})
    second = _flow_cfg(cache, tmp_path, 2, "s2", pairing="cross_scene", init=first.out)
    from tavr.train.stage1 import LatentCache

    lc = LatentCache(second.cache)
    for row in lc.rows("train")[:4]:
        ref = lc.reference_for(int(row), "cross_scene")
        me, other = lc.index.iloc[int(row)], lc.index.iloc[ref]
        assert me["identity"] == other["identity"] and me["scene"] != other["scene"]
        same = lc.index.iloc[lc.reference_for(int(row), "same_scene")]
        assert same["clip_id"] == me["clip_id"] and same["window"] != me["window"]
    metrics = stage1.train(second, root, {})
    assert metrics["steps"] == 2
    with pytest.raises(ValueError, match="pairing"):
        lc.reference_for(0, "sideways")


def test_interpolate_saves_the_mix_of_the_trained_and_the_init_weights(cache, tmp_path):
    """interpolate 0.25: every saved tensor is 0.25 x the weights the same run saves at 1, plus 0.75 x the
    init's (WiSE-FT); the validation loss is the saved model's. Without init it is refused up front."""
    root = TAVRConfig()
    first = _flow_cfg(cache, tmp_path, 2, "s1")
    stage1.train(first, root, {})
    full = stage1.train(_flow_cfg(cache, tmp_path, 2, "full", init=first.out), root, {})
    mixed = stage1.train(_flow_cfg(cache, tmp_path, 2, "mixed", init=first.out, interpolate=0.25), root, {})
    init = load_file(str(Path(first.out) / "transformer/model.safetensors"))
    a = load_file(str(tmp_path / "full/model/transformer/model.safetensors"))
    m = load_file(str(tmp_path / "mixed/model/transformer/model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training moved the weights
    for k in a:
        torch.testing.assert_close(m[k], 0.25 * a[k] + 0.75 * init[k], rtol=1e-5, atol=1e-6)
    assert mixed["val_loss"] != full["val_loss"]
    with pytest.raises(ConfigError, match="init is empty"):
        stage1.train(_flow_cfg(cache, tmp_path, 2, "none", interpolate=0.5), root, {})


def test_a_same_scene_share_replays_stage_1_pairs_inside_a_cross_scene_stage():
    from tavr.config import load_config
    from tavr.train.stage1 import _pairing, rng

    def draws(**kw):
        cfg = FlowStageConfig(pairing="cross_scene", **kw)
        return [_pairing(cfg, rng(0, i)) for i in range(400)]

    assert set(draws()) == {"cross_scene"}
    assert set(draws(same_scene_share=1.0)) == {"same_scene"}
    share = draws(same_scene_share=0.5).count("same_scene") / 400
    assert 0.4 < share < 0.6
    # no share set: the sample's generator is not touched, so runs without it draw the noise they always drew
    g = rng(0, 7)
    _pairing(FlowStageConfig(pairing="cross_scene"), g)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=rng(0, 7)))
    with pytest.raises(ValueError, match="same_scene_share"):
        load_config(None, {"stage2": {"same_scene_share": 1.5}})


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(cache, tmp_path, kill_at_first_checkpoint):
    """Kill -9 a real stage-1 process after its first checkpoint; `--resume auto` ends on the
    weights of a run that was never killed, and no logged step is lost or repeated."""
    import os
    import subprocess
    import sys

    import yaml

    def params(name: str) -> Path:
        section = {"run": {"steps": 8, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1,
                           "tracker": "none"},
                   "cache": str(cache / "latents"), "vae": str(cache / "codec"), "out": str(tmp_path / name / "model"),
                   "run_dir": str(tmp_path / name / "run"), "val_batches": 1, "heldout": {"count": 0}}  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"stage1": section}))
        return path

    cmd = [sys.executable, "-m", "tavr.train.stage1", "--params"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    subprocess.run([*cmd, str(params("whole"))], check=True, capture_output=True, env=env, timeout=300)

    proc = subprocess.Popen([*cmd, str(params("killed"))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kill_at_first_checkpoint(proc, tmp_path / "killed" / "run" / "checkpoints", timeout=240)
    assert not (tmp_path / "killed" / "model" / "model_index.json").exists()  # it really died mid-run
    subprocess.run([*cmd, str(params("killed")), "--resume", "auto"], check=True, capture_output=True, env=env, timeout=300)

    a = load_file(str(tmp_path / "whole/model/transformer/model.safetensors"))
    b = load_file(str(tmp_path / "killed/model/transformer/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = pd.read_csv(tmp_path / "killed/run/dvclive/plots/metrics/loss.tsv", sep="\t")["step"].tolist()
    assert steps == list(range(1, 9))


def test_two_processes_match_one_with_the_same_global_batch(cache, tmp_path):
    """torchrun with 2 CPU processes (gloo, DDP) x batch 2 logs the losses of 1 process x batch 4."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    import yaml

    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed beside this Python")

    def params(name: str, batch: int) -> Path:
        section = {"run": {"steps": 3, "batch_size": batch, "warmup_steps": 1, "ema_decay": 0.0, "checkpoint_every": 3,
                           "log_every": 1, "tracker": "none"},
                   "cache": str(cache / "latents"), "vae": str(cache / "codec"), "out": str(tmp_path / name / "model"),
                   "run_dir": str(tmp_path / name / "run"), "val_batches": 1, "min_keep_ratio": 1.0,
                   "heldout": {"count": 0}}  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"stage1": section}))
        return path

    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "tavr.train.stage1", "--params", str(params("one", 4))],
                   check=True, capture_output=True, env=env, timeout=300)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    res = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
                          "-m", "tavr.train.stage1", "--params", str(params("two", 2))],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    one = pd.read_csv(tmp_path / "one/run/dvclive/plots/metrics/loss.tsv", sep="\t")["loss"].to_numpy()
    two = pd.read_csv(tmp_path / "two/run/dvclive/plots/metrics/loss.tsv", sep="\t")["loss"].to_numpy()
    assert len(one) == len(two) == 3
    assert abs(one - two).max() < 1e-4 * abs(one).max(), (one, two)


def test_motion_steps_continue_clips_and_train_the_motion_embedding(cache, tmp_path):
    from tavr.train.stage1 import LatentCache

    lc = LatentCache(cache / "latents")
    for row in range(len(lc.index)):
        me, prev = lc.index.iloc[row], lc.previous[row]
        if me["window"] == 0:
            assert prev == -1
            nxt = lc.index.iloc[lc.with_previous(row)]
            assert nxt["clip_id"] == me["clip_id"] and nxt["window"] == 1
        else:
            assert lc.index.iloc[prev]["clip_id"] == me["clip_id"] and lc.index.iloc[prev]["window"] == me["window"] - 1
            assert lc.with_previous(row) == row
    second = [r for r in range(len(lc.index)) if lc.previous[r] >= 0][:2]
    b = lc.batch(second, second, motion_frames=1)
    assert torch.equal(b["motion"], lc.tensors["latent"][lc.previous[second]][:, :, -1:].float())
    with pytest.raises(ValueError, match="previous window"):
        lc.batch([int(np.flatnonzero(lc.previous < 0)[0])], [0], motion_frames=1)

    root = TAVRConfig()
    for prob in (0.0, 1.0):
        cfg = _flow_cfg(cache, tmp_path, 2, f"motion{prob}", motion_prob=prob)
        stage1.train(cfg, root, {})
        emb = TAVRPipeline.from_pretrained(cfg.out).transformer.motion_embedding
        assert (emb.abs().sum() > 0) == (prob > 0)  # starts at zero; only motion steps move it


def test_codec_fit_reads_train_clips_only_and_reconstructs_held_out_faces(clips, tmp_path):
    """The bench clips' files are replaced by missing paths: the fit still runs and gives the same codec."""
    table = pd.read_parquet(clips)
    hidden = clips.parent / "manifest_bench_missing.parquet"
    table.assign(path=[p if s == "train" else f"missing/{p}" for p, s in zip(table["path"], table["split"])]).to_parquet(hidden)
    a = stage0_codec.fit(CodecConfig(manifest=str(clips), out=str(tmp_path / "a"), eval_clips=2))
    b = stage0_codec.fit(CodecConfig(manifest=str(hidden), out=str(tmp_path / "b"), eval_clips=0))
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["windows"] == b["windows"] == 2 * int((table["split"] == "train").sum())
    assert a["psnr_bench"] > 26 and b["psnr_bench"] is None  # unseen identities, unseen scenes
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["windows"] == a["windows"]
    table[table["split"] == "bench"].to_parquet(clips.parent / "manifest_bench_only.parquet")
    with pytest.raises(ValueError, match="no train clips"):
        stage0_codec.fit(CodecConfig(manifest=str(clips.parent / "manifest_bench_only.parquet"), out=str(tmp_path / "c")))


def test_codec_init_takes_the_base_codec_as_it_is(clips, cache, tmp_path):
    """codec.init copies a base's codec byte for byte (no fit) and still measures it; a missing one is an error."""
    from tavr.files import sha256

    taken = stage0_codec.fit(CodecConfig(manifest=str(clips), out=str(tmp_path / "taken"), eval_clips=1, init=str(cache / "codec")))
    assert sha256(tmp_path / "taken" / "model.safetensors") == sha256(cache / "codec" / "model.safetensors") == taken["sha256"]
    assert "windows" not in taken and taken["psnr_bench"] > 26
    with pytest.raises(FileNotFoundError, match="codec.init"):
        stage0_codec.fit(CodecConfig(manifest=str(clips), out=str(tmp_path / "none"), init=str(tmp_path / "nowhere")))


def test_a_stage_refuses_init_weights_of_another_codec(clips, cache, tmp_path):
    """Fine-tuning a base on latents of a codec it never saw would train in a foreign latent space."""
    base = _flow_cfg(cache, tmp_path, 2, "base")
    stage1.train(base, TAVRConfig(), {})
    stage1.check_same_codec(base.out, base.vae)  # its own codec: fine
    other = CodecConfig(manifest=str(clips), out=str(tmp_path / "other"), eval_clips=0, max_windows=3)  # fitted on less: other weights
    stage0_codec.fit(other)
    with pytest.raises(stage1.CodecMismatch, match="another codec"):
        stage1.train(replace(_flow_cfg(cache, tmp_path, 2, "tuned", init=base.out), vae=other.out), TAVRConfig(), {})
    assert not (tmp_path / "tuned" / "model").exists()
