"""Multi-head attention with Wan's parameter names and a backend switch.

CPU (and any call with a mask) uses torch's SDPA. On a CUDA device with fp16 or
bf16 inputs and no mask, `flash_attn.flash_attn_func` is used when the
`flash-attn` package is installed; otherwise SDPA, which picks its own fused
kernel on GPU.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from tavr.models.layers import apply_rope


@functools.cache
def _flash():
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, Lq, heads, d), k/v (B, Lk, heads, d), mask (Lq, Lk) bool or None -> (B, Lq, heads, d)."""
    if mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _flash() is not None:
        return _flash()(q, k, v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


class Attention(nn.Module):
    """Self- or cross-attention: to_q/to_k/to_v, RMS-normed q and k across heads, to_out.

    `zero_out=True` starts the output projection at zero, so a new branch adds nothing
    until it is trained.
    """

    def __init__(self, dim: int, heads: int, eps: float = 1e-6, kv_dim: int | None = None, zero_out: bool = False):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(kv_dim or dim, dim)
        self.to_v = nn.Linear(kv_dim or dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        if zero_out:
            nn.init.zeros_(self.to_out[0].weight)
            nn.init.zeros_(self.to_out[0].bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, L, D), context (B, Lc, D) or None (self-attention) -> (B, L, D)."""
        context = x if context is None else context
        q = self.norm_q(self.to_q(x)).unflatten(2, (self.heads, -1))  # (B, L, heads, d)
        k = self.norm_k(self.to_k(context)).unflatten(2, (self.heads, -1))
        v = self.to_v(context).unflatten(2, (self.heads, -1))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(q, k, v, mask).flatten(2, 3).type_as(q)  # (B, L, D)
        return self.to_out[1](self.to_out[0](out))
