"""Flow-GRPO math: a stochastic sampler with log-probabilities, group advantages, the clipped loss.

Flow matching samples with an ODE, which has no log-probability to push on. Flow-GRPO
swaps it for an SDE with the same marginals: from x at noise level sigma to sigma_next
(dt = sigma_next - sigma < 0),

    mean = x + [v + std^2 / (2 sigma) * (x + (1 - sigma) v)] * dt
    x'   = mean + std * sqrt(-dt) * eps,     std = noise_level * sqrt(sigma / (1 - sigma))

so each step is a Gaussian policy whose log-probability is known in closed form.
Rewards of G samples of one condition are normalised within that group (the
advantage); the policy loss is PPO's clipped ratio; the KL to a frozen reference
model between two Gaussians of equal std is |mean - mean_ref|^2 / (2 std^2 (-dt)).
Log-probabilities and KL are means over elements, as in Flow-GRPO, so their scale
does not depend on the latent size.

Shapes: x, v, mean (B, C, F, h, w); sigma scalars; per-sample results (B,).
"""

from __future__ import annotations

import math

import torch

from tavr import flow


def sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """(steps + 1,) noise levels from 1 down to 0, shifted like the samplers'."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    return flow.shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def step_std(sigma: float, sigma_next: float, noise_level: float, sigma_cap: float) -> float:
    """The SDE step's standard deviation, std * sqrt(-dt); sigma = 1 uses `sigma_cap` (< 1) instead."""
    s = min(sigma, sigma_cap)
    return noise_level * math.sqrt(s / (1 - s)) * math.sqrt(sigma - sigma_next)


def sde_mean(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float, noise_level: float,
             sigma_cap: float) -> torch.Tensor:  # fmt: skip
    """Mean of x' given x and the velocity v (B, C, F, h, w)."""
    s = min(sigma, sigma_cap)
    var = noise_level**2 * s / (1 - s)  # std^2 per unit time
    dt = sigma_next - sigma
    return x + (v + var / (2 * sigma) * (x + (1 - sigma) * v)) * dt


def log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Gaussian log-density of `sample` under N(mean, std^2), mean over all but the batch dim -> (B,)."""
    lp = -((sample.detach() - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).mean(1)


def kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: float) -> torch.Tensor:
    """KL(N(mean, std^2) || N(mean_ref, std^2)) per element, mean per sample -> (B,)."""
    return ((mean - mean_ref) ** 2).flatten(1).mean(1) / (2 * std**2)


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps) for rewards (N,) and group ids (N,).

    A group whose samples all scored the same gets zero advantage: nothing to learn from it.
    """
    adv = torch.zeros_like(rewards, dtype=torch.float32)
    for g in groups.unique():
        idx = groups == g
        r = rewards[idx].float()
        adv[idx] = (r - r.mean()) / (r.std(unbiased=False) + eps)
    return adv


def clipped_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                 clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """PPO's pessimistic clipped objective, negated for descent -> (loss, share of samples clipped)."""
    ratio = torch.exp(logp - logp_old)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, ((ratio - 1).abs() > clip_range).float().mean()
