"""Stage 0 trains and resumes exactly; the latent cache holds every window with the right shapes."""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tavr.config import GenerateConfig, IngestConfig, LatentsConfig, RunConfig, SynthConfig, VAEStageConfig
from tavr.data import synth
from tavr.data.ingest import ingest
from tavr.models.vae import TAVRVAE
from tavr.train import stage0_vae
from tavr.train.latents import encode_cache


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cfg = synth.resized(SynthConfig(scenes_per_identity=2, clips_per_scene=1, workers=2), 3, 4)
    synth.generate(cfg, root / "synth")
    ingest([root / "synth"], root / "clips", IngestConfig(workers=2))
    return root / "clips" / "manifest.parquet"


def _vae_cfg(tmp, manifest, steps, name="run"):
    run = RunConfig(steps=steps, batch_size=2, lr=1e-3, warmup_steps=2, ema_decay=0.0, checkpoint_every=2, log_every=1, tracker="none")
    return VAEStageConfig(run=run, stats_windows=3, manifest=str(manifest), out=str(tmp / name / "vae"), run_dir=str(tmp / name / "run"))


def test_stage0_trains_saves_and_resumes_exactly(clips, tmp_path):
    straight = _vae_cfg(tmp_path, clips, 4, "straight")
    metrics = stage0_vae.train(straight, {})
    assert metrics["steps"] == 4 and metrics["psnr_bench"] > 0
    assert json.loads((tmp_path / "straight/vae/metrics.json").read_text())["steps"] == 4
    # the same run stopped after 2 steps and resumed from its checkpoint ends on the same weights
    half = _vae_cfg(tmp_path, clips, 2, "resumed")
    stage0_vae.train(half, {})
    stage0_vae.train(dataclasses.replace(half, run=dataclasses.replace(half.run, steps=4)), {}, resume="auto")
    a, b = TAVRVAE.load(straight.out).state_dict(), TAVRVAE.load(half.out).state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = pd.read_csv(tmp_path / "resumed/run/dvclive/plots/metrics/loss.tsv", sep="\t")["step"].tolist()
    assert steps == [1, 2, 3, 4]


def test_latent_cache_has_every_window(clips, tmp_path):
    vae_cfg = _vae_cfg(tmp_path, clips, 2)
    stage0_vae.train(vae_cfg, {})
    cfg = LatentsConfig(vae=vae_cfg.out, manifest=str(clips), out=str(tmp_path / "latents"), batch=4)
    summary = encode_cache(cfg, GenerateConfig(), progress=False)
    manifest = pd.read_parquet(clips)
    index = pd.read_parquet(tmp_path / "latents" / "index.parquet")
    assert len(index) == summary["windows"] == 2 * len(manifest)  # 50 frames -> two 25-frame windows
    cache = load_file(str(tmp_path / "latents" / "cache.safetensors"))
    assert cache["latent"].shape == (len(index), 16, 7, 16, 16) and cache["latent"].dtype == torch.float16
    assert cache["mask"].shape == (len(index), 1, 7, 16, 16) and set(cache["mask"].unique().tolist()) <= {0, 1}
    assert cache["audio"].shape == (len(index), 7, 8, 320) and torch.isfinite(cache["audio"].float()).all()
    assert 0.05 < cache["mask"].float().mean() < 0.9
    lat = cache["latent"].float()
    assert lat.mean().abs() < 0.5 and 0.3 < lat.std() < 3  # normalised by the stats stage 0 stored
    text = load_file(str(tmp_path / "latents" / "text.safetensors"))
    assert text["text"].shape[-1] == 384
    assert not (tmp_path / "latents.partial").exists()
