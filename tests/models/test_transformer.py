"""TAVRTransformer3DModel: shapes, Wan parity, gradients everywhere, token selection."""

import dataclasses

import pytest
import torch
from diffusers import WanTransformer3DModel

from tavr.config import ModelConfig
from tavr.models.token_selection import TokenSelector, num_kept
from tavr.models.transformer import TAVR_ONLY, TAVRTransformer3DModel

TINY = ModelConfig(num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, audio_dim=20)


def _inputs(b=2, f=3, fr=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(
        hidden_states=r(b, 16, f, h, w), timestep=torch.tensor([10.0, 700.0][:b]), encoder_hidden_states=r(b, 5, 32),
        background=r(b, 16, f, h, w), background_mask=(r(b, 1, f, h, w) > 0).float(), reference=r(b, 16, fr, h, w),
        motion=r(b, 16, 1, h, w), audio=r(b, f, 6, 20), reference_audio=r(b, fr, 6, 20),
    )  # fmt: skip


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope="module")
def wan():
    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True, eps=1e-6, rope_max_seq_len=64,
    ).eval()  # fmt: skip
    _randomise(model)
    return model


def test_wan_parity_with_tavr_inputs_off(wan):
    model = TAVRTransformer3DModel.from_wan(wan, audio_dim=20).eval()
    inp = _inputs()
    with torch.no_grad():
        ref = wan(inp["hidden_states"], inp["timestep"], inp["encoder_hidden_states"]).sample
        plain = model(inp["hidden_states"], inp["timestep"], inp["encoder_hidden_states"])
        # background, mask and audio go in through zero-initialised projections: still Wan's output
        with_zero_branches = model(
            inp["hidden_states"], inp["timestep"], inp["encoder_hidden_states"],
            background=inp["background"], background_mask=inp["background_mask"], audio=inp["audio"],
        )  # fmt: skip
    assert torch.allclose(plain, ref, atol=1e-6)
    assert torch.allclose(with_zero_branches, ref, atol=1e-6)
    # and Wan's parameter names are kept: every Wan tensor is in our state dict, unchanged
    ours = model.state_dict()
    for name, value in wan.state_dict().items():
        assert torch.equal(ours[name], value), name


def test_from_wan_directory_and_rejects_image_models(wan, tmp_path):
    wan.save_pretrained(tmp_path / "wan")
    model = TAVRTransformer3DModel.from_wan(tmp_path / "wan", audio_dim=20)
    assert model.config.num_layers == 2 and model.config.text_dim == 32
    with pytest.raises(FileNotFoundError):
        TAVRTransformer3DModel.from_wan(tmp_path / "nowhere")
    i2v = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32, ffn_dim=64,
                                num_layers=1, image_dim=16, added_kv_proj_dim=48)  # fmt: skip
    with pytest.raises(ValueError, match="text-to-video"):
        TAVRTransformer3DModel.from_wan(i2v)


def test_shapes_with_every_input():
    model = TAVRTransformer3DModel(TINY).eval()
    _randomise(model)
    inp = _inputs()
    with torch.no_grad():
        out = model(**inp, keep_ratio=0.5)
    assert out.shape == inp["hidden_states"].shape
    assert torch.isfinite(out).all()


def test_every_input_changes_the_output_once_trained():
    model = TAVRTransformer3DModel(TINY).eval()
    _randomise(model)
    inp = _inputs()
    with torch.no_grad():
        base = model(**inp)
        for key in ("background", "background_mask", "reference", "motion", "audio", "reference_audio", "encoder_hidden_states"):
            other = dict(inp, **{key: torch.randn_like(inp[key])})
            assert not torch.allclose(model(**other), base, atol=1e-4), key


def test_gradient_reaches_every_trainable_parameter():
    """Zero-initialised output projections get gradient at once; after one step every parameter does."""
    model = TAVRTransformer3DModel(TINY).train()
    inp = _inputs()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        out = model(**inp, keep_ratio=0.5, generator=torch.Generator().manual_seed(step))
        out.square().mean().backward()
        if step == 0:
            assert all(b.attn_audio.to_out[0].weight.grad.abs().sum() > 0 for b in model.blocks)
            assert model.background_embedding.weight.grad.abs().sum() > 0
            opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead
    assert model.token_selector.score.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = TAVRTransformer3DModel(TINY).train()
    b = TAVRTransformer3DModel(dataclasses.replace(TINY, gradient_checkpointing=True)).train()
    b.load_state_dict(a.state_dict())
    inp = _inputs()
    for m in (a, b):
        m(**inp).square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6), n


def test_top_k_keeps_the_highest_scores():
    sel = TokenSelector(8).eval()
    tokens = torch.randn(2, 20, 8)
    with torch.no_grad():
        sel.score.weight.normal_()
    kept, index = sel(tokens, keep_ratio=0.25)
    assert kept.shape == (2, 5, 8) and index.shape == (2, 5)
    scores = sel.scores(tokens)
    for b in range(2):
        assert set(index[b].tolist()) == set(scores[b].topk(5).indices.tolist())
        assert torch.equal(kept[b], tokens[b, index[b]])
    assert torch.equal(index, index.sort(dim=1).values)
    kept_all, index_all = sel(tokens, keep_ratio=1.0)
    assert torch.equal(kept_all, tokens) and index_all.shape == (2, 20)


def test_keep_ratio_rules():
    assert num_kept(832, 0.25) == 208 and num_kept(10, 1.0) == 10 and num_kept(3, 0.01) == 1
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep_ratio"):
            num_kept(10, bad)


def test_keep_ratio_reduces_attention_tokens():
    model = TAVRTransformer3DModel(TINY).eval()
    seen = []
    hook = model.blocks[0].attn1.register_forward_hook(lambda m, args, kw_out: seen.append(args[0].shape[1]))
    inp = _inputs(b=1, fr=4)
    with torch.no_grad():
        for ratio in (1.0, 0.25):
            model(**inp, keep_ratio=ratio)
    hook.remove()
    target, motion, ref = 3 * 16, 16, 4 * 16
    assert seen == [target + motion + ref, target + motion + ref // 4]


def test_tavr_only_parameters_are_named_apart_and_start_silent():
    model = TAVRTransformer3DModel(TINY)
    names = [n for n, _ in model.named_parameters() if any(t in n for t in TAVR_ONLY)]
    assert any("attn_audio" in n for n in names) and any("token_selector" in n for n in names)
    assert model.background_embedding.weight.abs().sum() == 0
    assert all(b.attn_audio.to_out[0].weight.abs().sum() == 0 for b in model.blocks)


def test_save_and_load_round_trip_is_bit_exact(tmp_path):
    model = TAVRTransformer3DModel(TINY).eval()
    _randomise(model)
    model.save_pretrained(tmp_path)
    loaded = TAVRTransformer3DModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    inp = _inputs()
    with torch.no_grad():
        assert torch.equal(model(**inp, keep_ratio=0.5), loaded(**inp, keep_ratio=0.5))
    with pytest.raises(FileNotFoundError):
        TAVRTransformer3DModel.from_pretrained(tmp_path / "missing")


def test_audio_window_mismatch_raises():
    model = TAVRTransformer3DModel(TINY)
    inp = _inputs()
    inp["audio"] = inp["audio"][:, :2]
    with pytest.raises(ValueError, match="latent-frame windows"):
        model(**inp)


def test_patch_linear_equals_the_convolution():
    from tavr.models.transformer import _patch_linear

    conv = torch.nn.Conv3d(17, 32, kernel_size=(1, 2, 2), stride=(1, 2, 2))
    x = torch.randn(2, 17, 3, 8, 8)
    assert torch.allclose(_patch_linear(x, conv), conv(x).flatten(2).transpose(1, 2), atol=1e-5)


def test_sample_prediction_is_a_velocity_to_the_clean_latent_with_the_background_composited():
    """prediction "sample": the head's output is x0; outside the person mask x0 is the given background,
    and the model returns the velocity (x - x0) / sigma that a sampler integrates."""
    raw = TAVRTransformer3DModel(dataclasses.replace(TINY, prediction="velocity", compose_background=False)).eval()
    _randomise(raw)
    model = TAVRTransformer3DModel(TINY).eval()
    model.load_state_dict(raw.state_dict())
    inp = _inputs()
    x, sigma, person = inp["hidden_states"], inp["timestep"] / 1000, inp["background_mask"]
    with torch.no_grad():
        head, v = raw(**inp), model(**inp)
    x0 = x - sigma.reshape(-1, 1, 1, 1, 1) * v
    assert torch.allclose(x0 * (1 - person), inp["background"] * (1 - person), atol=1e-4)  # the background is given
    assert torch.allclose(x0 * person, head * person, atol=1e-4)  # the person is the head's
    assert not torch.allclose(x0, inp["background"], atol=1e-2)
    free = TAVRTransformer3DModel(dataclasses.replace(TINY, compose_background=False)).eval()
    free.load_state_dict(raw.state_dict())
    with torch.no_grad():
        assert torch.allclose(x - sigma.reshape(-1, 1, 1, 1, 1) * free(**inp), head, atol=1e-4)


def test_wan_models_predict_the_velocity_and_an_unknown_prediction_is_refused():
    from tavr.config import build_config

    assert build_config({"preset": "1.3b"}).model.prediction == "velocity"
    assert build_config({"preset": "tiny"}).model.prediction == "sample"
    with pytest.raises(ValueError, match="prediction"):
        TAVRTransformer3DModel(dataclasses.replace(TINY, prediction="epsilon"))
