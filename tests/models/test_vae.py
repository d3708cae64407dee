"""TAVRVAE on the tiny preset: shapes, the 4k + 1 frame rule, latent normalisation, checkpoints, one training step."""

import pytest
import torch
from diffusers import AutoencoderKLWan

from tavr.models.vae import PRESETS, TINY_VAE, TAVRVAE, latent_frames, video_frames


def _video(b: int, f: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random video (B, 3, F, H, W) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h, w, generator=g) * 2 - 1


@pytest.fixture
def vae() -> TAVRVAE:
    torch.manual_seed(0)
    return TAVRVAE.from_config(TINY_VAE).eval()


def test_encode_decode_shapes(vae):
    video = _video(1, 9, 64, 64)
    with torch.no_grad():
        latent = vae.encode(video)
        out = vae.decode(latent)
        again = vae.encode(video)
        sampled = vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
    assert latent.shape == (1, 16, 3, 8, 8)
    assert out.shape == (1, 3, 9, 64, 64)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(latent, again)  # posterior mean: deterministic
    assert not torch.equal(latent, sampled)


def test_frame_rule(vae):
    assert [latent_frames(f) for f in (1, 5, 9, 81)] == [1, 2, 3, 21]
    assert [video_frames(n) for n in (1, 2, 3, 21)] == [1, 5, 9, 81]
    with pytest.raises(ValueError, match=r"4k \+ 1 frames"):
        latent_frames(8)
    with pytest.raises(ValueError, match=r"4k \+ 1 frames"):
        vae.encode(_video(1, 8, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(_video(1, 5, 36, 32))
    with pytest.raises(ValueError):
        video_frames(0)


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown keys"):
        TAVRVAE({**TINY_VAE, "dropout": 0.1})
    with pytest.raises(ValueError, match="shape"):
        TAVRVAE({**TINY_VAE, "latents_mean": [0.0] * 4})
    assert set(PRESETS["wan2.1"]) == set(TINY_VAE)


def test_normalisation_with_estimated_stats(vae):
    videos = [_video(2, 5, 32, 32, seed=i) for i in range(3)]
    mean, std = vae.estimate_latent_stats(videos)
    assert mean.shape == std.shape == (16,)
    vae.set_latent_stats(mean, std)
    assert vae.config["latents_mean"] == mean.tolist() and vae.config["latents_std"] == std.tolist()
    assert vae.vae.config.latents_std == std.tolist()  # the inner diffusers config follows
    with torch.no_grad():
        z = torch.cat([vae.encode(v) for v in videos])  # (B, C, F', h, w)
    z = z.transpose(0, 1).flatten(1)  # (C, B * F' * h * w)
    assert z.mean(1).abs().max() < 1e-4
    assert (z.std(1, unbiased=False) - 1).abs().max() < 1e-3


def test_save_load_round_trip(vae, tmp_path):
    vae.set_latent_stats(torch.linspace(-1, 1, 16), torch.linspace(0.5, 2, 16))
    vae.save(tmp_path)
    loaded = TAVRVAE.load(tmp_path).eval()
    assert loaded.config == vae.config
    a, b = vae.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    video = _video(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.equal(vae.encode(video), loaded.encode(video))


def test_from_pretrained_reads_diffusers_layout(tmp_path):
    mean, std = torch.linspace(-1, 1, 16), torch.linspace(0.5, 2, 16)
    torch.manual_seed(1)
    wan = AutoencoderKLWan(**{**TINY_VAE, "latents_mean": mean.tolist(), "latents_std": std.tolist()}).eval()
    wan.save_pretrained(tmp_path)
    vae = TAVRVAE.from_pretrained(tmp_path).eval()
    assert torch.equal(vae.latents_mean, mean) and torch.equal(vae.latents_std, std)
    video = _video(1, 5, 32, 32)
    with torch.no_grad():
        expected = (wan.encode(video).latent_dist.mode() - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
        assert torch.allclose(vae.encode(video), expected, atol=1e-6)


def test_missing_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        TAVRVAE.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        TAVRVAE.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="vae.safetensors"):
        TAVRVAE.load(tmp_path)


def test_training_step_reaches_every_parameter(vae):
    # sample=True so the log-variance half of encoder.conv_out and quant_conv gets a gradient too;
    # with the posterior mean only, those output rows (not whole tensors) would get zero gradient.
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    video = _video(1, 5, 32, 32)
    recon = vae.decode(vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0)))
    loss = torch.nn.functional.mse_loss(recon, video)
    loss.backward()
    no_grad = [n for n, p in vae.vae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    opt.step()
    after = vae.state_dict()
    assert all(not torch.equal(before[n], after[n]) for n, _ in vae.named_parameters())
    assert torch.equal(before["latents_mean"], after["latents_mean"])  # buffers are not trained
