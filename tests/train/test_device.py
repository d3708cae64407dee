"""Training on an accelerator: every tensor of a step lives on the model's device, and a step runs
under bf16 autocast. The meta device stands in for a GPU (nothing on it may mix with CPU tensors)."""

import pytest
import torch

from tavr.config import FlowStageConfig, ModelConfig
from tavr.models.transformer import TAVRTransformer3DModel
from tavr.train import stage1
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
