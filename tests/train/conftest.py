"""Shared fixtures of the training tests: a tiny ingested data set (with bench pairs), a latent cache, and a
killer of training processes."""

import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tavr.config import CodecConfig, GenerateConfig, IngestConfig, LatentsConfig, RunConfig, SynthConfig, VAEStageConfig
from tavr.data import synth
from tavr.data.ingest import ingest
from tavr.data.pairs import make_pairs, write_pairs
from tavr.train import stage0_codec
from tavr.train.latents import encode_cache


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cfg = synth.resized(SynthConfig(scenes_per_identity=2, clips_per_scene=1, workers=2), 3, 4)
    synth.generate(cfg, root / "synth")
    ingest([root / "synth"], root / "clips", IngestConfig(workers=2))
    manifest = root / "clips" / "manifest.parquet"
    write_pairs(root / "bench_pairs.json", make_pairs(pd.read_parquet(manifest), 2), root / "clips")
    return manifest


def _vae_cfg(tmp, manifest, steps, name="run"):
    run = RunConfig(steps=steps, batch_size=2, lr=1e-3, warmup_steps=2, ema_decay=0.0, checkpoint_every=2, log_every=1, tracker="none")
    return VAEStageConfig(run=run, stats_windows=3, manifest=str(manifest), out=str(tmp / name / "vae"), run_dir=str(tmp / name / "run"))


@pytest.fixture(scope="session")
def vae_cfg():
    """The stage-0 config factory: vae_cfg(tmp, manifest, steps, name)."""
    return _vae_cfg


def _kill_at_first_checkpoint(proc: subprocess.Popen, checkpoints: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while not any(p.name.startswith("step_") and not p.name.endswith(".tmp") for p in checkpoints.glob("*")):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def kill_at_first_checkpoint():
    """kill_at_first_checkpoint(proc, checkpoints, timeout): SIGKILL a training process as soon as
    `checkpoints` holds a finished step folder; fails if the process ends first or time runs out."""
    return _kill_at_first_checkpoint


@pytest.fixture(scope="session")
def cache(clips, tmp_path_factory):
    """The patch codec fitted on the train clips (tmp/codec) and the latent cache (tmp/latents)."""
    tmp = tmp_path_factory.mktemp("cache")
    cfg = CodecConfig(manifest=str(clips), out=str(tmp / "codec"), eval_clips=1)
    stage0_codec.fit(cfg)
    encode_cache(LatentsConfig(vae=cfg.out, manifest=str(clips), out=str(tmp / "latents"), batch=4), GenerateConfig(), progress=False)
    return tmp


@pytest.fixture(scope="session")
def base_cache(clips, tmp_path_factory):
    """The train clips' latent cache in the shipped base's codec (tmp/latents), for tests that start
    from models/base, whose weights live in that codec's latent space."""
    tmp = tmp_path_factory.mktemp("base_cache")
    base = Path(__file__).resolve().parents[2] / "models/base"
    cfg = CodecConfig(manifest=str(clips), out=str(tmp / "codec"), init=str(base / "vae"), eval_clips=1)
    stage0_codec.fit(cfg)
    encode_cache(LatentsConfig(vae=cfg.out, manifest=str(clips), out=str(tmp / "latents"), batch=4), GenerateConfig(), progress=False)
    return tmp

