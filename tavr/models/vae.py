"""TAVRVAE: Wan2.1's causal 3D video VAE (diffusers `AutoencoderKLWan`) plus latent normalisation,
and `build_vae`/`load_vae`, which give either it or the tiny preset's `PatchCodec` (tavr/models/codec.py)
behind one interface: encode, decode, save, load.

    video (B, 3, F, H, W) in [-1, 1], F = 1 + 4k, H and W multiples of 8
      -> causal encoder, run on frame 0 and then 4 frames at a time
      -> posterior mean and log-variance, each (B, C, 1 + k, H/8, W/8), C = z_dim = 16
      -> (z - latents_mean) / latents_std per channel: the latent the DiT sees
    decode undoes the normalisation, decodes one latent frame at a time, clamps to [-1, 1].

The per-channel stats are buffers (in the state dict) mirrored in `config`. Pretrained
Wan2.1 brings its published stats; a VAE trained here gets them from `estimate_latent_stats`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from tavr.files import load_weights, save_weights
from tavr.models.codec import CLASS_NAME as CODEC_CLASS
from tavr.models.codec import PATCH_CODEC, PatchCodec

TINY_VAE = {
    "base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_scales": [],
    "temperal_downsample": [False, True, True], "latents_mean": [0.0] * 16, "latents_std": [1.0] * 16,
}  # fmt: skip
WAN21_VAE = {
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160],
}  # fmt: skip
PRESETS = {"wan-tiny": TINY_VAE, "wan2.1": WAN21_VAE}  # a learned tiny Wan VAE (tavr train vae) | Wan2.1's shape
NAMES = ("patch", *PRESETS)  # what GenerateConfig.vae may name
CONFIG_KEYS = tuple(TINY_VAE)
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def latent_frames(num_frames: int) -> int:
    """Latent frames of a video with num_frames = 1 + 4k frames: 1 + k."""
    if num_frames < 1 or num_frames % 4 != 1:
        raise ValueError(f"a video needs 4k + 1 frames (1, 5, 9, ...) for the VAE; got {num_frames}")
    return 1 + (num_frames - 1) // 4


def video_frames(num_latent_frames: int) -> int:
    """Video frames decoded from 1 + k latent frames: 1 + 4k."""
    if num_latent_frames < 1:
        raise ValueError(f"a latent needs at least 1 frame; got {num_latent_frames}")
    return 1 + 4 * (num_latent_frames - 1)


class TAVRVAE(nn.Module):
    """`AutoencoderKLWan` as `self.vae`, plus per-channel latent stats as buffers.

    The layout is pinned to Wan2.1's (3 spatial downsamples, the last two also temporal):
    diffusers encodes in chunks of 1 + 4 frames whatever the config says, so only 4x / 8x fits.
    """

    def __init__(self, config: dict):
        super().__init__()
        unknown, missing = set(config) - set(CONFIG_KEYS), set(CONFIG_KEYS) - set(config)
        if unknown or missing:
            raise ValueError(f"VAE config: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        if len(config["dim_mult"]) != 4 or list(config["temperal_downsample"]) != [False, True, True]:
            raise ValueError("VAE config: needs 4 dim_mult levels and temperal_downsample [False, True, True]")
        plain = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in config.items()}
        self.arch = {k: v for k, v in plain.items() if not k.startswith("latents_")}
        from diffusers import AutoencoderKLWan  # only Wan's VAE needs diffusers; the patch codec trains without it

        self.vae = AutoencoderKLWan(**self.arch)
        self.register_buffer("latents_mean", torch.zeros(self.arch["z_dim"]))
        self.register_buffer("latents_std", torch.ones(self.arch["z_dim"]))
        self.set_latent_stats(torch.tensor(plain["latents_mean"]), torch.tensor(plain["latents_std"]))

    @classmethod
    def from_config(cls, config: dict) -> TAVRVAE:
        return cls(config)

    @property
    def config(self) -> dict:
        """Plain JSON-serialisable dict; the latent stats mirror the buffers."""
        return {**self.arch, "latents_mean": self.latents_mean.tolist(), "latents_std": self.latents_std.tolist()}

    # ----- latent statistics -----

    @torch.no_grad()
    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel stats (C,) of unnormalised latents; also written to the inner diffusers config."""
        c = self.arch["z_dim"]
        if mean.shape != (c,) or std.shape != (c,):
            raise ValueError(f"latent stats must have shape ({c},); got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ValueError("latents_std must be positive")
        self.latents_mean.copy_(mean)
        self.latents_std.copy_(std)
        self.vae.register_to_config(latents_mean=self.latents_mean.tolist(), latents_std=self.latents_std.tolist())

    @torch.no_grad()
    def estimate_latent_stats(self, videos: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (mean, std), each (C,), of unnormalised posterior means over videos (B, 3, F, H, W)."""
        total, total_sq, count = 0.0, 0.0, 0
        for video in videos:
            z = self.posterior(video).mode().double()  # (B, C, F', H/8, W/8)
            z = z.transpose(0, 1).flatten(1)  # (C, B * F' * H/8 * W/8)
            total, total_sq, count = total + z.sum(1), total_sq + (z * z).sum(1), count + z.shape[1]
        if count == 0:
            raise ValueError("estimate_latent_stats needs at least one video")
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
        return mean.float(), std.float()

    # ----- encode / decode -----

    def posterior(self, video: torch.Tensor):
        """diffusers DiagonalGaussianDistribution of the unnormalised latent of video (B, 3, F, H, W)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, F, H, W); got {tuple(video.shape)}")
        latent_frames(video.shape[2])
        if video.shape[3] % 8 or video.shape[4] % 8:
            raise ValueError(f"video height and width must be multiples of 8; got {video.shape[3]}x{video.shape[4]}")
        return self.vae.encode(video).latent_dist

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training pass, through this module so that a DDP wrapper sees it: video (B, 3, F, H, W)
        -> (the decoded posterior sample (B, 3, F, H, W), the KL to N(0, 1) per latent element, 0-d)."""
        posterior = self.posterior(video)
        recon = self.vae.decode(posterior.sample()).sample
        kl = 0.5 * (posterior.mean**2 + posterior.var - 1.0 - posterior.logvar).mean()
        return recon, kl

    def encode(self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        """video (B, 3, F, H, W) in [-1, 1] -> normalised latent (B, C, 1 + (F - 1) / 4, H/8, W/8).

        The posterior mean by default; a posterior sample when `sample`."""
        posterior = self.posterior(video)
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        return (z - self.latents_mean.view(1, -1, 1, 1, 1)) / self.latents_std.view(1, -1, 1, 1, 1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent (B, C, F', h, w) -> video (B, 3, 1 + 4(F' - 1), 8h, 8w) in [-1, 1]."""
        if latent.ndim != 5 or latent.shape[1] != self.arch["z_dim"]:
            raise ValueError(f"latent must be (B, {self.arch['z_dim']}, F, H, W); got {tuple(latent.shape)}")
        z = latent * self.latents_std.view(1, -1, 1, 1, 1) + self.latents_mean.view(1, -1, 1, 1, 1)
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)  # diffusers clamps too; kept explicit

    # ----- loading and saving -----

    def save(self, directory: str | Path) -> None:
        """`vae_config.json` + `vae.safetensors` (no pickle)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vae_config.json").write_text(json.dumps(self.config, indent=1))
        save_weights(self, directory / "vae.safetensors")

    @classmethod
    def load(cls, directory: str | Path) -> TAVRVAE:
        directory = Path(directory)
        if not (directory / "vae_config.json").is_file() or not (directory / "vae.safetensors").is_file():
            raise FileNotFoundError(f"{directory} needs vae_config.json and vae.safetensors")
        model = cls(json.loads((directory / "vae_config.json").read_text()))
        model.load_state_dict(load_weights(directory / "vae.safetensors"))
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TAVRVAE:
        """Wan2.1's VAE in diffusers layout (config.json + diffusion_pytorch_model.safetensors), local files only."""
        directory = Path(directory)
        if not (directory / "config.json").is_file() or not (directory / DIFFUSERS_WEIGHTS).is_file():
            raise FileNotFoundError(f"no diffusers VAE at {directory}: it needs config.json and {DIFFUSERS_WEIGHTS}")
        from diffusers import AutoencoderKLWan

        wan = AutoencoderKLWan.from_pretrained(str(directory), local_files_only=True)
        wc = wan.config
        if wc.is_residual or wc.patch_size is not None or wc.decoder_base_dim not in (None, wc.base_dim):
            raise ValueError("only Wan2.1's VAE is supported (is_residual False, no patch_size, one base_dim)")
        model = cls({k: wc[k] for k in CONFIG_KEYS})
        model.vae.load_state_dict(wan.state_dict())
        return model


# ----- either codec by name or by folder -----


def build_vae(name: str) -> TAVRVAE | PatchCodec:
    """A new codec: "patch" (DCT-initialised until fitted), "wan-tiny" or "wan2.1" (random weights)."""
    if name == "patch":
        return PatchCodec.from_config(PATCH_CODEC)
    if name not in PRESETS:
        raise ValueError(f"unknown VAE {name!r} (choose from {', '.join(NAMES)})")
    return TAVRVAE.from_config(PRESETS[name])


def load_vae(directory: str | Path) -> TAVRVAE | PatchCodec:
    """The codec saved in a folder: a PatchCodec (config.json naming it), a TAVRVAE (vae_config.json),
    or Wan2.1's VAE in diffusers layout (config.json + diffusion_pytorch_model.safetensors)."""
    directory = Path(directory)
    config = directory / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("_class_name") == CODEC_CLASS:
        return PatchCodec.from_pretrained(directory)
    if (directory / "vae_config.json").is_file():
        return TAVRVAE.load(directory)
    if (directory / DIFFUSERS_WEIGHTS).is_file():
        return TAVRVAE.from_pretrained(directory)
    raise FileNotFoundError(f"no codec at {directory}: expected a PatchCodec (config.json + model.safetensors), "
                            f"a TAVRVAE (vae_config.json + vae.safetensors) or a diffusers AutoencoderKLWan folder")
