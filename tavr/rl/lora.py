"""Low-rank adapters for RL fine-tuning: train A and B of W + (alpha / r) B A, keep W frozen.

    add_lora(model, rank=8, alpha=8)      wraps the linears of every transformer block
    with lora_disabled(model): ...        the frozen base model (the KL reference) without a copy
    merge_lora(model)                     folds B A into W and unwraps: a plain model to save

B starts at zero, so a fresh adapter leaves the model unchanged.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1; got {rank}")
        self.base, self.scale, self.enabled = base, alpha / rank, True
        base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.enabled:
            out = out + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale
        return out


def add_lora(model: nn.Module, rank: int, alpha: float) -> list[str]:
    """Freeze `model` and wrap every nn.Linear inside `model.blocks` (attention, audio attention,
    FFN) in place; embeddings and the output head stay frozen. Returns the wrapped names."""
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full.startswith("blocks."):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(full)
    if not wrapped:
        raise ValueError("add_lora found no attention or FFN linear layer to adapt")
    return wrapped


@contextlib.contextmanager
def lora_disabled(model: nn.Module):
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.enabled = False
    try:
        yield
    finally:
        for m in layers:
            m.enabled = True


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain nn.Linear back."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                child.base.weight += (child.lora_b @ child.lora_a) * child.scale
                child.base.requires_grad_(True)
                setattr(module, child_name, child.base)
    return model
