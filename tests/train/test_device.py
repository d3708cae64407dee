"""Training on an accelerator: every tensor of a step lives on the model's device, and a step runs
under bf16 autocast. The meta device stands in for a GPU (nothing on it may mix with CPU tensors)."""

import numpy as np
import pytest
import torch

from tavr.config import FlowStageConfig, ModelConfig, RLStageConfig
from tavr.models.transformer import TAVRTransformer3DModel
from tavr.models.vae import PRESETS, TAVRVAE
from tavr.rl import grpo
from tavr.train import stage1, stage3_rl
from tavr.train.stage1 import LatentCache

MICRO = dict(num_attention_heads=2, attention_head_dim=16, freq_dim=32, ffn_dim=64, num_layers=1)


def _model(cache: LatentCache, device: str) -> TAVRTransformer3DModel:
    t = cache.tensors
    cfg = ModelConfig(**MICRO, in_channels=t["latent"].shape[1], out_channels=t["latent"].shape[1],
                      text_dim=cache.text.shape[-1], audio_dim=t["audio"].shape[-1])  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        return TAVRTransformer3DModel(cfg)


def _step_inputs(cache: LatentCache, device: str):
    rows = [int(r) for r in cache.rows("train")[:2]]
    refs = [cache.reference_for(r, "same_scene", stage1.rng(0, i)) for i, r in enumerate(rows)]
    return cache.batch(rows, refs, device=device), [stage1.rng(0, 0, i) for i in range(len(rows))]


def test_batch_and_loss_live_on_the_models_device(cache):
    lat = LatentCache(cache / "latents")
    b, gens = _step_inputs(lat, "meta")
    assert {v.device.type for v in b.values() if v is not None} == {"meta"}
    loss = stage1.flow_loss(_model(lat, "meta"), b, FlowStageConfig(), 0.5, True, True, gens)
    assert loss.device.type == "meta" and loss.shape == ()


def test_an_rl_rollout_its_advantages_and_its_loss_live_on_the_models_device(cache):
    """Stage 3's step: SDE rollout, group advantages of the (CPU, numpy) rewards, the clipped loss with
    the KL to a frozen copy; the rollout's noise is drawn on CPU generators and must be moved."""
    lat = LatentCache(cache / "latents")
    cfg = RLStageConfig(group_size=2, sample_steps=2)
    b, _ = _step_inputs(lat, "meta")
    model, frozen = _model(lat, "meta"), _model(lat, "meta").requires_grad_(False)
    sigmas = grpo.sigmas(cfg.sample_steps, cfg.shift)
    roll = stage3_rl.rollout(model, b, sigmas, cfg, [stage1.rng(0, 0, i) for i in range(2)])
    assert roll["xs"].device.type == "meta" and roll["xs"].shape[:2] == (3, 2)
    adv = stage3_rl.advantages(np.array([0.2, 0.5]), cfg.group_size, cfg.adv_clip, "meta")
    assert adv.device.type == "meta" and adv.shape == (2,)

    def reference(x, s, batch):
        return stage3_rl._forward(frozen, x, s, batch)

    loss, parts = stage3_rl.step_loss(model, reference, b, roll, 0, sigmas, adv, cfg)
    assert loss.device.type == "meta" and loss.shape == ()
    assert {v.device.type for v in parts.values()} == {"meta"}


def test_the_vae_training_pass_runs_through_the_module_on_its_device():
    """Stage 0 calls the (possibly DDP-wrapped) module itself; its reconstruction and KL stay on the
    module's device."""
    vae = TAVRVAE.from_config(PRESETS["wan-tiny"]).to("meta")
    recon, kl = vae(torch.empty(1, 3, 5, 32, 32, device="meta"))
    assert recon.device.type == kl.device.type == "meta"
    assert recon.shape == (1, 3, 5, 32, 32) and kl.shape == ()


def test_a_step_under_bf16_autocast_is_finite_and_close_to_fp32(cache):
    lat = LatentCache(cache / "latents")
    model = _model(lat, "cpu")
    b, _ = _step_inputs(lat, "cpu")
    losses = []
    for autocast in (False, True):
        gens = [stage1.rng(0, 0, i) for i in range(2)]  # the same noise both times
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = stage1.flow_loss(model, b, FlowStageConfig(), 1.0, True, True, gens)
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_auto_precision_is_fp32_on_the_cpu(tmp_path):
    from tavr.config import RunConfig
    from tavr.train import common

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine 'auto' is bf16 by design")
    # (accelerate's state is one per process, so an explicit bf16 cannot be built beside it here)
    assert common.make_accelerator(RunConfig(mixed_precision="auto"), tmp_path).mixed_precision == "no"


def test_the_latent_cache_device_is_checked_and_auto_is_the_cpu_without_a_gpu():
    from tavr.config import ConfigError, load_config
    from tavr.train import common

    with pytest.raises(ConfigError, match=r"latents\.device"):
        load_config(None, {"latents": {"device": "gpu"}})
    assert load_config(None, {"latents": {"device": "cuda:1"}}).latents.device == "cuda:1"
    assert common.auto_device("cpu").type == "cpu" and common.auto_device("meta").type == "meta"
    if not torch.cuda.is_available():
        assert common.auto_device(load_config(None).latents.device).type == "cpu"
