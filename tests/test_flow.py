"""Flow-matching math: path, target, loss, timestep sampling, and samplers that reach the data."""

import pytest
import torch

from tavr import flow


def test_path_endpoints_and_target():
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(flow.interpolate(x0, noise, torch.zeros(2)), x0)
    assert torch.allclose(flow.interpolate(x0, noise, torch.ones(2)), noise)
    sigma = torch.tensor([0.25, 0.75])
    xt = flow.interpolate(x0, noise, sigma)
    # moving along the velocity from x_sigma by -sigma lands on x0
    assert torch.allclose(xt - sigma[:, None, None] * flow.velocity_target(x0, noise), x0, atol=1e-6)


def test_sigma_sampling_and_shift():
    g = torch.Generator().manual_seed(0)
    s = flow.sample_sigmas(10000, generator=g)
    assert (s > 0).all() and (s < 1).all() and abs(s.mean().item() - 0.5) < 0.02
    shifted = flow.sample_sigmas(10000, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert shifted.mean() > s.mean() + 0.1
    assert torch.all(shifted >= s)


def test_masked_loss_counts_only_the_mask():
    pred, target = torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2)
    target[..., 0, :] = 2.0  # error only in the first row
    mask = torch.zeros_like(pred)
    mask[..., 0, :] = 1.0
    assert flow.loss(pred, target, mask).item() == pytest.approx(4.0)
    assert flow.loss(pred, target).item() == pytest.approx(2.0)
    assert flow.loss(pred, target, 1 - mask).item() == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["euler", "unipc"])
def test_samplers_reach_the_data_with_the_exact_velocity(name):
    x0 = torch.randn(1, 4, 3, 2, 2)
    noise = torch.randn_like(x0, generator=None)

    def velocity(x, t):
        sigma = (t / flow.NUM_TRAIN_TIMESTEPS).reshape(-1, 1, 1, 1, 1)
        return (x - x0) / sigma  # the true velocity of a single-point data set

    out = flow.sample(velocity, noise, steps=8, scheduler=flow.make_sampler(name, shift=3.0))
    # UniPC hands out integer timesteps, so sigma read back from t is slightly off
    assert torch.allclose(out, x0, atol=1e-3 if name == "euler" else 5e-3)
    assert not torch.allclose(noise, x0, atol=0.1)


def test_guidance_combines_the_three_passes():
    calls = []
    table = {(False, False): 1.0, (True, False): 3.0, (True, True): 4.0, (False, True): 2.0}

    def velocity(ref, audio):
        calls.append((ref, audio))
        return torch.tensor(table[(ref, audio)])

    assert flow.guided_velocity(velocity, 1.0, 1.0).item() == 4.0 and calls == [(True, True)]
    # 1 + 2 * (3 - 1) + 1.5 * (4 - 3) = 6.5
    assert flow.guided_velocity(velocity, 2.0, 1.5).item() == pytest.approx(6.5)
    # audio first with audio at 1: v(-,a) + s_ref * (v(ref,a) - v(-,a)), two passes
    calls.clear()
    assert flow.guided_velocity(velocity, 3.0, 1.0, "audio").item() == pytest.approx(2 + 3 * (4 - 2))
    assert calls == [(True, True), (False, True)]
    assert flow.guided_velocity(velocity, 2.0, 2.0, "audio").item() == pytest.approx(1 + 2 * (2 - 1) + 2 * (4 - 2))
    calls.clear()
    flow.guided_velocity(velocity, 3.0, 1.0)  # reference first needs the third pass even with audio at 1
    assert len(calls) == 3
    with pytest.raises(ValueError, match="guidance order"):
        flow.guided_velocity(velocity, 2.0, 1.0, "text")


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="unknown sampler"):
        flow.make_sampler("ddim")
    with pytest.raises(ValueError, match="steps"):
        flow.sample(lambda x, t: x, torch.zeros(1), steps=0)


def test_interpolate_moves_sigma_to_the_data_device():
    # The pipeline pins a seam frame with a CPU sigma; on a GPU the data lives elsewhere. The meta
    # device stands in for it here: a CPU sigma of shape (1,) must not be mixed in as is.
    x0 = torch.zeros(1, 2, 3, 4, 5, device="meta")
    out = flow.interpolate(x0, torch.zeros_like(x0), torch.tensor([0.3]))
    assert out.device.type == "meta" and out.shape == x0.shape
