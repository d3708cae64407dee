"""Token selection: keep the most useful reference tokens, cut attention cost.

A linear scorer rates every reference token. `keep_ratio` (a per-call knob)
sets how many survive: k = ceil(keep_ratio * L). At inference the top-k scores
win. In training the scores get Gumbel noise before the top-k (so other tokens
get tried) and each kept token is scaled by a straight-through gate
g = 1 + sigmoid(s) - stopgrad(sigmoid(s)): its value is exactly 1, so the forward
pass is the hard selection, while the loss gradient reaches the scores through
d g / d s = sigmoid'(s).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def num_kept(length: int, keep_ratio: float) -> int:
    """How many of `length` tokens survive at `keep_ratio` (at least one)."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1]; got {keep_ratio}")
    return max(1, min(length, math.ceil(keep_ratio * length - 1e-9)))


class TokenSelector(nn.Module):
    """Scores reference tokens (B, L, D) -> (B, L); selects the top `keep_ratio` of them."""

    def __init__(self, dim: int, eps: float = 1e-6, temperature: float = 1.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.score = nn.Linear(dim, 1)
        self.temperature = temperature
        nn.init.zeros_(self.score.weight)  # all tokens equal at first; training sorts them out
        nn.init.zeros_(self.score.bias)

    def scores(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.score(self.norm(tokens)).squeeze(-1)  # (B, L)

    def forward(
        self, tokens: torch.Tensor, keep_ratio: float = 1.0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L, D) -> (kept tokens (B, k, D), their indices (B, k) ascending)."""
        b, length, _ = tokens.shape
        k = num_kept(length, keep_ratio)
        s = self.scores(tokens)
        if k == length:
            index = torch.arange(length, device=tokens.device).expand(b, length)
        else:
            rank = s.detach()
            if self.training and self.temperature > 0:
                u = torch.rand(s.shape, generator=generator, device=s.device, dtype=s.dtype).clamp_(1e-6, 1 - 1e-6)
                rank = rank - self.temperature * torch.log(-torch.log(u))  # Gumbel-top-k
            index = rank.topk(k, dim=1).indices.sort(dim=1).values  # (B, k)
        kept = tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))
        if self.training:
            p = torch.sigmoid(s.gather(1, index))[..., None]  # (B, k, 1)
            kept = kept * (1 + p - p.detach())
        return kept, index
