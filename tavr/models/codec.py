"""PatchCodec: a linear space-time patch codec, fitted in closed form (whitened PCA).

The tiny preset's latent codec. It has Wan2.1's latent grid, so the transformer, the latent
cache and the pipeline see exactly what they would see from `AutoencoderKLWan`:

    video (B, 3, F, H, W) in [-1, 1], F = 1 + 4k, H and W multiples of 8
      -> frame 0 alone as 1 x 8 x 8 x 3 patches, then frames 4j+1..4j+4 as 4 x 8 x 8 x 3 patches
         (Wan's causal rule: a latent frame never depends on a later video frame)
      -> per patch z = ((p - mean) @ basis) / scale   (basis: the top C principal directions,
         scale: the square root of their variance, so each channel is whitened)
      -> latent (B, C, 1 + k, H/8, W/8)
    decode is the transpose: p = (z * scale) @ basis.T + mean, clamped to [-1, 1].

Frame 0 and the 4-frame groups have bases of their own ("first" and "group"); a patch that lies
in mean + span(basis) comes back exactly. `fit` accumulates patch covariances over any number
of videos and takes an eigendecomposition (seconds on a CPU). An unfitted codec uses the
lowest-frequency 3D DCT directions with unit scale, so it is a usable (if blurry) codec at once.

Saved as a folder: config.json (shape, and "_class_name": "PatchCodec") and model.safetensors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from tavr.files import load_weights, save_weights

CLASS_NAME = "PatchCodec"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
PATCH_CODEC = {"temporal_patch": 4, "spatial_patch": 8, "z_dim": 16}  # Wan2.1's grid, z_dim 16: the tiny preset
PARTS = ("first", "group")  # frame 0 alone, then groups of temporal_patch frames


def _dct_basis(frames: int, side: int, channels: int) -> torch.Tensor:
    """The `channels` lowest-frequency separable DCT-II directions of a (3, frames, side, side) patch.

    -> (3 * frames * side * side, channels), orthonormal columns, ordered by total frequency."""

    def dct(n: int) -> torch.Tensor:  # (n, n): row k is frequency k
        i = torch.arange(n, dtype=torch.float64)
        m = torch.cos(math.pi * (i[None] + 0.5) * i[:, None] / n)
        return m / m.norm(dim=1, keepdim=True)

    ft, fs = dct(frames), dct(side)
    triples = sorted(((t + y + x, t, y, x) for t in range(frames) for y in range(side) for x in range(side)))
    columns = []
    for _, t, y, x in triples:
        atom = torch.einsum("f,h,w->fhw", ft[t], fs[y], fs[x]).flatten()  # (frames * side * side,)
        for c in range(3):  # every colour of a frequency before the next frequency
            column = torch.zeros(3, atom.numel(), dtype=torch.float64)  # (3, frames * side * side): a patch's layout
            column[c] = atom
            columns.append(column.flatten())
            if len(columns) == channels:
                return torch.stack(columns, dim=1).float()
    raise ValueError(f"a {frames}x{side}x{side}x3 patch has only {len(columns)} directions; asked for {channels}")


class PatchCodec(nn.Module):
    """encode (B, 3, F, H, W) -> (B, C, 1 + (F - 1) / T, H / S, W / S); decode the inverse map."""

    def __init__(self, config: dict):
        super().__init__()
        keys = set(PATCH_CODEC)
        config = {k: v for k, v in config.items() if k != "_class_name"}
        if set(config) != keys:
            raise ValueError(f"PatchCodec config: needs exactly {sorted(keys)}; got {sorted(config)}")
        if any(not isinstance(v, int) or v < 1 for v in config.values()):
            raise ValueError(f"PatchCodec config: every value must be a positive integer; got {config}")
        self.arch = dict(config)
        t, s, c = config["temporal_patch"], config["spatial_patch"], config["z_dim"]
        for part, frames in zip(PARTS, (1, t)):
            dim = 3 * frames * s * s
            if c > dim:
                raise ValueError(f"PatchCodec: z_dim {c} exceeds the {dim} values of a {part} patch")
            self.register_buffer(f"{part}_mean", torch.zeros(dim))
            self.register_buffer(f"{part}_basis", _dct_basis(frames, s, c))  # (dim, C)
            self.register_buffer(f"{part}_scale", torch.ones(c))  # (C,)

    @classmethod
    def from_config(cls, config: dict) -> PatchCodec:
        return cls(config)

    @property
    def config(self) -> dict:
        return {"_class_name": CLASS_NAME, **self.arch}

    @property
    def z_dim(self) -> int:
        return self.arch["z_dim"]

    # ----- patches -----

    def _check(self, video: torch.Tensor) -> None:
        t, s = self.arch["temporal_patch"], self.arch["spatial_patch"]
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, F, H, W); got {tuple(video.shape)}")
        if video.shape[2] < 1 or (video.shape[2] - 1) % t:
            raise ValueError(f"a video needs {t}k + 1 frames for the codec; got {video.shape[2]}")
        if video.shape[3] % s or video.shape[4] % s:
            raise ValueError(f"video height and width must be multiples of {s}; got {video.shape[3]}x{video.shape[4]}")

    def _patches(self, video: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, 3, G * frames, H, W) -> (B, G, h, w, 3 * frames * S * S), channel-major inside a patch."""
        b, _, f, h, w = video.shape
        s = self.arch["spatial_patch"]
        x = video.reshape(b, 3, f // frames, frames, h // s, s, w // s, s)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4)  # (B, G, h, w, 3 * frames * S * S)

    def _unpatch(self, p: torch.Tensor, frames: int) -> torch.Tensor:
        """Inverse of `_patches`: (B, G, h, w, D) -> (B, 3, G * frames, h * S, w * S)."""
        b, g, h, w, _ = p.shape
        s = self.arch["spatial_patch"]
        x = p.reshape(b, g, h, w, 3, frames, s, s).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, 3, g * frames, h * s, w * s)

    def _split(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, F, H, W) -> first-frame patches (B, 1, h, w, D1), group patches (B, k, h, w, D)."""
        return self._patches(video[:, :, :1], 1), self._patches(video[:, :, 1:], self.arch["temporal_patch"])

    # ----- encode / decode -----

    def encode(self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """video (B, 3, F, H, W) in [-1, 1] -> whitened latent (B, C, 1 + (F - 1) / T, H / S, W / S).

        `sample` and `generator` are accepted for the VAE interface; a linear codec is deterministic."""
        self._check(video)
        video = video.to(self.first_basis.dtype)
        latents = []
        for part, p in zip(PARTS, self._split(video)):
            mean, basis, scale = (getattr(self, f"{part}_{n}") for n in ("mean", "basis", "scale"))
            latents.append(((p - mean) @ basis) / scale)  # (B, G, h, w, C)
        return torch.cat(latents, dim=1).permute(0, 4, 1, 2, 3).contiguous()  # (B, C, F', h, w)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, F', h, w) -> video (B, 3, 1 + T(F' - 1), S h, S w) in [-1, 1]."""
        if latent.ndim != 5 or latent.shape[1] != self.z_dim:
            raise ValueError(f"latent must be (B, {self.z_dim}, F, H, W); got {tuple(latent.shape)}")
        z = latent.to(self.first_basis.dtype).permute(0, 2, 3, 4, 1)  # (B, F', h, w, C)
        parts = []
        for part, zz, frames in zip(PARTS, (z[:, :1], z[:, 1:]), (1, self.arch["temporal_patch"])):
            mean, basis, scale = (getattr(self, f"{part}_{n}") for n in ("mean", "basis", "scale"))
            parts.append(self._unpatch((zz * scale) @ basis.T + mean, frames))
        return torch.cat(parts, dim=2).clamp(-1.0, 1.0)

    # ----- closed-form fit -----

    @torch.no_grad()
    def fit(self, videos: Iterable[torch.Tensor]) -> dict:
        """Whitened PCA of the patches of videos (B, 3, F, H, W) in [-1, 1]; replaces the bases.

        Returns {"patches": {part: n}, "explained": {part: share of variance kept}}."""
        stats = {part: [0, 0.0, 0.0] for part in PARTS}  # count, sum (D,), sum of outer products (D, D)
        for video in videos:
            self._check(video)
            for part, p in zip(PARTS, self._split(video.double())):
                p = p.reshape(-1, p.shape[-1])  # (N, D)
                n, total, outer = stats[part]
                stats[part] = [n + p.shape[0], total + p.sum(0), outer + p.T @ p]
        if any(stats[part][0] < 2 for part in PARTS):
            raise ValueError("PatchCodec.fit needs at least one video of 5 frames or more")
        explained = {}
        for part in PARTS:
            n, total, outer = stats[part]
            mean = total / n
            cov = outer / n - torch.outer(mean, mean)  # (D, D)
            values, vectors = torch.linalg.eigh(cov)  # ascending
            values, vectors = values.flip(0), vectors.flip(1)
            c = self.z_dim
            basis = vectors[:, :c] * torch.sign(vectors[:, :c].sum(0) + 1e-12)  # a fixed sign per direction
            getattr(self, f"{part}_mean").copy_(mean)
            getattr(self, f"{part}_basis").copy_(basis)
            getattr(self, f"{part}_scale").copy_(values[:c].clamp_min(1e-8).sqrt())
            explained[part] = float(values[:c].sum() / values.clamp_min(0).sum())
        return {"patches": {part: int(stats[part][0]) for part in PARTS}, "explained": explained}

    # ----- loading and saving -----

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=1))
        save_weights(self, directory / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PatchCodec:
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no patch codec at {directory}: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config.get("_class_name") != CLASS_NAME:
            raise ValueError(f"{directory / CONFIG_FILE} describes {config.get('_class_name')!r}, not a {CLASS_NAME}")
        model = cls(config)
        model.load_state_dict(load_weights(directory / WEIGHTS_FILE))
        return model

    # the names TAVRVAE uses, so either codec fits every caller
    save = save_pretrained
    load = from_pretrained
