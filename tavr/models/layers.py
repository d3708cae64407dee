"""Shared primitives: fp32 layer norm, timestep and text embedders, feed-forward, 3D RoPE.

Module and parameter names match diffusers' Wan2.1 modules so that a
`WanTransformer3DModel` state dict loads into `TAVRTransformer3DModel` unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (as Wan does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features (B,) -> (B, dim): [cos | sin], Wan's `Timesteps(flip_sin_to_cos=True)`."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TextProjection(nn.Module):
    """Two linears with tanh-GELU between (diffusers' PixArtAlphaTextProjection)."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class ConditionEmbedder(nn.Module):
    """Timestep -> (temb (B, D), modulation (B, 6, D)); text (B, L, text_dim) -> (B, L, D)."""

    def __init__(self, dim: int, freq_dim: int, text_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_embedder = TimestepEmbedding(freq_dim, dim)
        self.act_fn = nn.SiLU()
        self.time_proj = nn.Linear(dim, dim * 6)
        self.text_embedder = TextProjection(text_dim, dim)

    def time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        temb = self.time_embedder(timestep_features(t, self.freq_dim).to(self.time_embedder.linear_1.weight.dtype))
        return temb, self.time_proj(self.act_fn(temb)).unflatten(1, (6, -1))


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """`net.0.proj` -> tanh-GELU -> `net.2`, as diffusers' FeedForward("gelu-approximate")."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to the (time, height, width) axes, as in Wan."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_freqs(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """3D rotary angles for token positions (L, 3) or (B, L, 3) as (t, h, w); any real values.

    Returns (cos, sin), each (B or 1, L, 1, head_dim) fp32, interleaved in pairs like
    Wan's table. Computed in float64 so integer positions reproduce Wan's values exactly.
    """
    if positions.ndim == 2:
        positions = positions[None]
    parts = []
    for axis, dim in enumerate(rope_split(head_dim)):
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device)[: dim // 2] / dim))
        parts.append(positions[..., axis, None].double() * inv)  # (B, L, dim / 2)
    angles = torch.cat(parts, dim=-1).repeat_interleave(2, dim=-1)  # (B, L, head_dim)
    return angles.cos().float()[:, :, None], angles.sin().float()[:, :, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, L, heads, head_dim) by the angles of `rope_freqs`."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


def grid_positions(frames: int, height: int, width: int, t0: float = 0.0, device=None) -> torch.Tensor:
    """(t, h, w) of every token of a (frames, height, width) token grid, time from t0 -> (L, 3)."""
    t, h, w = torch.meshgrid(
        torch.arange(frames, device=device, dtype=torch.float64) + t0,
        torch.arange(height, device=device, dtype=torch.float64),
        torch.arange(width, device=device, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)
