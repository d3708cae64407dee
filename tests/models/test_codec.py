"""PatchCodec: the frame rule, exact round trips in the basis, the closed-form fit, save/load, dispatch."""

import json

import pytest
import torch

from tavr.config import load_config
from tavr.models.codec import PATCH_CODEC, PatchCodec
from tavr.models.vae import TAVRVAE, build_vae, load_vae


def _smooth_videos(n: int, frames: int = 9, side: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """Videos (1, 3, F, H, W) in [-1, 1] with structure a PCA can find: moving colour gradients."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames)[:, None, None]
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    out = []
    for _ in range(n):
        a = torch.rand(3, 4, generator=g) - 0.5
        chans = [a[c, 0] + a[c, 1] * x + a[c, 2] * y + a[c, 3] * torch.sin(3 * x + 2 * t) for c in range(3)]
        out.append(torch.stack(chans)[None].clamp(-1, 1))
    return out


def test_shapes_frame_rule_and_errors():
    codec = PatchCodec(PATCH_CODEC)
    z = codec.encode(torch.zeros(2, 3, 9, 32, 48))
    assert z.shape == (2, 16, 3, 4, 6)
    assert codec.decode(z).shape == (2, 3, 9, 32, 48)
    assert codec.encode(torch.zeros(1, 3, 1, 16, 16)).shape == (1, 16, 1, 2, 2)  # an image is latent frame 0
    with pytest.raises(ValueError, match="4k \\+ 1"):
        codec.encode(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(torch.zeros(1, 3, 5, 36, 32))
    with pytest.raises(ValueError, match="latent must be"):
        codec.decode(torch.zeros(1, 8, 2, 4, 4))
    with pytest.raises(ValueError, match="exceeds"):
        PatchCodec({**PATCH_CODEC, "z_dim": 193})  # a first-frame patch has 3 x 8 x 8 = 192 values
    with pytest.raises(ValueError, match="needs exactly"):
        PatchCodec({**PATCH_CODEC, "dropout": 0})


def test_latent_frames_are_causal():
    """Latent frame j depends only on its own video frames (0; then 4j-3..4j), as in Wan's VAE."""
    codec = PatchCodec(PATCH_CODEC)
    video = _smooth_videos(1, frames=9)[0]
    changed = video.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]  # frames 5-8: latent frame 2 only
    a, b = codec.encode(video), codec.encode(changed)
    assert torch.equal(a[:, :, :2], b[:, :, :2]) and not torch.allclose(a[:, :, 2], b[:, :, 2])
    assert torch.equal(codec.encode(video[:, :, :1]), a[:, :, :1])  # the first frame alone: the image-reference rule


def test_a_latent_in_the_basis_comes_back_exactly():
    codec = PatchCodec(PATCH_CODEC)
    codec.fit(_smooth_videos(6))
    z = 0.3 * torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    video = codec.decode(z)
    assert video.abs().max() < 1  # no clamping: every patch lies in mean + span(basis)
    assert torch.allclose(codec.encode(video), z, atol=1e-4)
    assert torch.allclose(codec.decode(codec.encode(video)), video, atol=1e-5)


def test_fit_recovers_low_rank_videos_and_whitens():
    """Videos made of at most 16 directions per patch are coded without loss; latents are whitened."""
    codec = PatchCodec(PATCH_CODEC)
    before = [((codec.decode(codec.encode(v)) - v) ** 2).mean().item() for v in _smooth_videos(4, seed=5)]
    torch.manual_seed(0)
    basis = torch.randn(16, 3 * 4 * 8 * 8)
    videos = []
    for _ in range(8):  # group patches drawn from one 16-dimensional space; frame 0 from the DCT-coded one
        coeff = 0.02 * torch.randn(1, 2, 4, 4, 16)
        groups = codec._unpatch(coeff @ basis, 4)  # (1, 3, 8, 32, 32)
        videos.append(torch.cat([torch.zeros(1, 3, 1, 32, 32), groups], dim=2).clamp(-1, 1))
    summary = codec.fit(videos)
    assert summary["patches"] == {"first": 8 * 16, "group": 8 * 2 * 16}
    assert summary["explained"]["group"] > 0.999
    for v in videos:
        assert torch.allclose(codec.decode(codec.encode(v)), v, atol=1e-4)
    z = torch.cat([codec.encode(v) for v in videos])[:, :, 1:]  # group latents (B, C, 2, 4, 4)
    per_channel = z.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(16), atol=1e-3)
    assert torch.allclose(per_channel.std(1, correction=0), torch.ones(16), atol=1e-3)
    # on natural-ish videos the fit beats the DCT start
    smooth = PatchCodec(PATCH_CODEC)
    smooth.fit(_smooth_videos(8, seed=9))
    after = [((smooth.decode(smooth.encode(v)) - v) ** 2).mean().item() for v in _smooth_videos(4, seed=5)]
    assert sum(after) < sum(before)


def test_fit_needs_videos():
    with pytest.raises(ValueError, match="at least one video"):
        PatchCodec(PATCH_CODEC).fit([])


def test_save_load_gives_identical_latents(tmp_path):
    codec = PatchCodec(PATCH_CODEC)
    codec.fit(_smooth_videos(4))
    codec.save_pretrained(tmp_path / "codec")
    assert json.loads((tmp_path / "codec" / "config.json").read_text())["_class_name"] == "PatchCodec"
    loaded = load_vae(tmp_path / "codec")
    assert isinstance(loaded, PatchCodec) and loaded.config == codec.config
    video = _smooth_videos(1, seed=3)[0]
    assert torch.equal(loaded.encode(video), codec.encode(video))
    assert torch.equal(loaded.decode(codec.encode(video)), codec.decode(codec.encode(video)))


def test_load_vae_dispatches_on_the_folder(tmp_path):
    build_vae("wan-tiny").save(tmp_path / "learned")
    assert isinstance(load_vae(tmp_path / "learned"), TAVRVAE)
    with pytest.raises(FileNotFoundError, match="no codec"):
        load_vae(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "PatchCodec", "z_dim": 16}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_vae(tmp_path / "other")
    with pytest.raises(ValueError, match="unknown VAE"):
        build_vae("huge")


def test_presets_pick_their_codec():
    """The tiny (and small) preset codes with the patch codec; the Wan-shaped presets keep Wan2.1's VAE."""
    assert load_config().generate.vae == "patch" and isinstance(build_vae("patch"), PatchCodec)
    assert load_config(overrides={"preset": "small"}).generate.vae == "patch"
    name = load_config(overrides={"preset": "1.3b"}).generate.vae
    assert name == "wan2.1"
    wan = build_vae(name)
    assert isinstance(wan, TAVRVAE) and wan.arch["base_dim"] == 96 and wan.latents_std[0] == pytest.approx(2.8184)
