"""Flow-GRPO math on cases with known answers."""

import math

import pytest
import torch

from tavr.rl import grpo


def _gaussian_velocity(m: float, s0: float):
    """Exact flow-matching velocity E[noise - x0 | x_sigma] when x0 ~ N(m, s0^2)."""

    def v(x: torch.Tensor, sigma: float) -> torch.Tensor:
        a = 1 - sigma
        var = a * a * s0 * s0 + sigma * sigma
        e_x0 = m + a * s0 * s0 / var * (x - a * m)
        e_noise = sigma / var * (x - a * m)
        return e_noise - e_x0

    return v


@pytest.mark.parametrize("noise_level", [0.0, 0.7])
def test_sde_sampler_reaches_the_data_distribution(noise_level):
    """With the exact velocity of a Gaussian, SDE (and ODE, noise 0) samples end at N(m, s0^2):
    a wrong sign or factor in the drift correction moves the mean or the spread."""
    m, s0, steps = 1.5, 0.5, 200
    v = _gaussian_velocity(m, s0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 1, generator=g, dtype=torch.float64)
    sig = grpo.sigmas(steps).double()
    for j in range(steps):
        s, s_next = float(sig[j]), float(sig[j + 1])
        mean = grpo.sde_mean(x, v(x, s), s, s_next, noise_level, sigma_cap=0.995)
        x = mean + grpo.step_std(s, s_next, noise_level, 0.995) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert abs(x.mean().item() - m) < 0.03
    assert abs(x.std().item() - s0) < 0.03


def test_zero_noise_is_the_euler_step():
    x, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(grpo.sde_mean(x, v, 0.6, 0.4, 0.0, 0.95), x + v * (0.4 - 0.6))
    assert grpo.step_std(0.6, 0.4, 0.0, 0.95) == 0.0


def test_log_prob_and_kl_match_torch_distributions():
    mean, sample, std = torch.randn(3, 2, 5), torch.randn(3, 2, 5), 0.3
    want = torch.distributions.Normal(mean, std).log_prob(sample).flatten(1).mean(1)
    assert torch.allclose(grpo.log_prob(sample, mean, std), want, atol=1e-5)
    other = mean + 0.1 * torch.randn(3, 2, 5)
    want_kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std), torch.distributions.Normal(other, std))
    assert torch.allclose(grpo.kl(mean, other, std), want_kl.flatten(1).mean(1), atol=1e-6)
    assert torch.equal(grpo.kl(mean, mean, std), torch.zeros(3))


def test_group_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.5, 0.5, 10.0, 20.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    adv = grpo.group_advantages(rewards, groups)
    assert torch.allclose(adv[:3], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-3)
    assert torch.equal(adv[3:6], torch.zeros(3))  # all equal: nothing to learn
    assert torch.allclose(adv[6:], torch.tensor([-1.0, 1.0]), atol=1e-3)  # scale-free across groups


def test_clipped_loss_stops_the_gradient_past_the_clip():
    adv = torch.tensor([1.0, -1.0])
    old = torch.zeros(2)
    inside = torch.tensor([0.05, -0.05], requires_grad=True)  # ratios 1.05 and 0.95
    loss, frac = grpo.clipped_loss(inside, old, adv, clip_range=0.2)
    loss.backward()
    assert frac.item() == 0.0 and (inside.grad.abs() > 0).all()
    past = torch.tensor([math.log(1.5), math.log(0.5)], requires_grad=True)  # pushed too far the advantage's way
    loss, frac = grpo.clipped_loss(past, old, adv, clip_range=0.2)
    loss.backward()
    assert frac.item() == 1.0 and torch.equal(past.grad, torch.zeros(2))
    wrong_way = torch.tensor([math.log(0.5)], requires_grad=True)  # a positive advantage made less likely: still pulled back
    loss, _ = grpo.clipped_loss(wrong_way, torch.zeros(1), torch.tensor([1.0]), clip_range=0.2)
    loss.backward()
    assert wrong_way.grad.item() < 0


def test_sigmas_run_from_one_to_zero():
    s = grpo.sigmas(8, shift=3.0)
    assert s.shape == (9,) and s[0] == 1 and s[-1] == 0 and (s[1:] < s[:-1]).all()
    with pytest.raises(ValueError, match="steps"):
        grpo.sigmas(0)
