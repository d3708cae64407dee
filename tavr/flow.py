"""Rectified-flow math, apart from the network and the loops.

Convention (diffusers' flow matching, as Wan): sigma in [0, 1] is the noise level,
x_sigma = (1 - sigma) * x0 + sigma * noise, the network predicts the velocity
v = noise - x0 at timestep 1000 * sigma, and sampling walks sigma from 1 to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Push noise levels up for larger latents: s * sigma / (1 + (s - 1) * sigma)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sample_sigmas(
    batch: int, shift: float = 1.0, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training noise levels (B,): logit-normal(mean, std), then shifted."""
    u = torch.randn(batch, generator=generator) * std + mean
    return shift_sigmas(torch.sigmoid(u), shift)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma (B, ...) on the straight path from data x0 to noise."""
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1))).to(device=x0.device, dtype=x0.dtype)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


SIGMA_FLOOR = 1e-3  # a clean-latent prediction at sigma 0 has no velocity: divide by at least this


def velocity_from_sample(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The velocity (B, ...) that carries x_sigma to a predicted clean latent x0: (x - x0) / sigma."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(device=x.device, dtype=x.dtype).clamp_min(SIGMA_FLOOR)
    return (x - x0) / s


def sample_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The clean latent x - sigma * v that a velocity (B, ...) at x_sigma points to."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(device=x.device, dtype=x.dtype).clamp_min(SIGMA_FLOOR)
    return x - s * v


def loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; `weight` (broadcastable to pred, e.g. (B, 1, F, H, W)) weights each element.

    With a weight, the result is sum(w * err^2) / sum(w * ones), so a 0/1 mask gives the
    mean over the masked elements only.
    """
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    w = weight.float().expand_as(err)
    return (w * err).sum() / w.sum().clamp_min(1e-8)


GUIDANCE_ORDERS = ("reference", "audio")  # which condition guided_velocity guides first


def make_sampler(name: str = "unipc", shift: float = 1.0):
    """A diffusers flow-matching scheduler: "euler" or "unipc" (Wan's default sampler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
        )
    raise ValueError(f"unknown sampler {name!r}; choose 'euler' or 'unipc'")


def guided_velocity(
    velocity: Callable[[bool, bool], torch.Tensor], reference_scale: float = 1.0, audio_scale: float = 1.0,
    order: str = "reference",
) -> torch.Tensor:
    """Classifier-free guidance with separate reference and audio scales.

    `velocity(use_reference, use_audio)` runs the network with or without each condition. `order`
    says which condition is guided first, i.e. measured with the other one off:
      "reference": v = v(-,-) + s_ref * (v(ref,-) - v(-,-)) + s_audio * (v(ref,audio) - v(ref,-))
      "audio":     v = v(-,-) + s_audio * (v(-,audio) - v(-,-)) + s_ref * (v(ref,audio) - v(-,audio))
    Scales of 1 need one pass. With audio_scale 1, "audio" needs two passes a step and "reference" three.
    """
    if order not in GUIDANCE_ORDERS:
        raise ValueError(f"guidance order must be one of {', '.join(GUIDANCE_ORDERS)}; got {order!r}")
    full = velocity(True, True)
    if reference_scale == 1.0 and audio_scale == 1.0:
        return full
    # `partial` has only the condition guided first; v = partial + s_second * (full - partial)
    #                                                    + (s_first - 1) * (partial - v(-,-))
    first, s_first, s_second = ((True, False), reference_scale, audio_scale) if order == "reference" else \
        ((False, True), audio_scale, reference_scale)
    partial = velocity(*first)
    out = partial + s_second * (full - partial)
    if s_first != 1.0:
        out = out + (s_first - 1.0) * (partial - velocity(False, False))
    return out


def sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    scheduler=None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    constraint: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate from noise (sigma = 1) to data with a diffusers scheduler.

    `velocity(x, timestep (B,))` returns the (guided) velocity; `callback(i, steps, x)` sees each
    step's result (progress, previews); `constraint(x, sigma)` may overwrite known parts of x after each step, given the
    noise level sigma that x is now at (0 after the last step), e.g. to pin frames by replacement.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    scheduler = scheduler or make_sampler()
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise if constraint is None else constraint(noise, float(scheduler.sigmas[0]))
    for i, t in enumerate(scheduler.timesteps):
        # the network hears the exact noise level of x (the scheduler rounds its timesteps to integers),
        # which a clean-latent model divides by to give its velocity
        level = (scheduler.sigmas[i] * NUM_TRAIN_TIMESTEPS).reshape(1).expand(x.shape[0])
        v = velocity(x, level.to(device=noise.device, dtype=noise.dtype))
        x = scheduler.step(v, t, x, return_dict=False)[0]
        if constraint is not None:
            x = constraint(x, float(scheduler.sigmas[i + 1]))
        if callback:
            callback(i + 1, steps, x)
    return x
