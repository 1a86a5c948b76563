"""Noise models: sampling statistics and log-likelihoods against torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch

import invgen
from invgen.errors import RangeError, UnknownNameError
from invgen.operators.noise import GaussianNoise, PoissonNoise


def test_gaussian_log_likelihood_and_gradient_match_torch_distributions():
    noise = GaussianNoise(0.2)
    ax = torch.rand(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    ll = noise.log_likelihood(y, ax)
    expected = torch.distributions.Normal(ax, 0.2).log_prob(y).sum(dim=(1, 2, 3))
    assert ll.shape == (3,)
    torch.testing.assert_close(ll, expected)
    (grad,) = torch.autograd.grad(ll.sum(), ax)
    torch.testing.assert_close(noise.grad_log_likelihood(y, ax.detach()), grad)


def test_gaussian_sampling_statistics_and_seeding():
    noise = invgen.noise("gaussian", std=0.1)
    ax = torch.full((4, 1, 64, 64), 0.3, dtype=torch.float64)
    y = noise.sample(ax, generator=torch.Generator().manual_seed(0))
    r = (y - ax).flatten()
    n = r.numel()
    assert abs(float(r.mean())) < 4 * 0.1 / math.sqrt(n)
    assert float(r.std()) == pytest.approx(0.1, rel=4 * math.sqrt(1 / (2 * n)))
    assert torch.equal(y, noise.sample(ax, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(y, noise.sample(ax, generator=torch.Generator().manual_seed(1)))
    exact = GaussianNoise(0.0).sample(ax)
    assert torch.equal(exact, ax) and exact is not ax
    with pytest.raises(RangeError, match="std = 0 has no finite log-likelihood"):
        GaussianNoise(0.0).log_likelihood(ax, ax)
    with pytest.raises(RangeError, match=r"expected a finite std >= 0, got -1\.0"):
        GaussianNoise(-1)


def test_poisson_log_likelihood_matches_torch_distributions():
    noise = PoissonNoise(rate=50.0)
    ax = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.05
    y = noise.sample(ax, generator=torch.Generator().manual_seed(0))
    counts = (50.0 * y).round()  # y = counts / rate: whole counts up to rounding
    expected = torch.distributions.Poisson(50.0 * ax).log_prob(counts).sum(dim=(1, 2, 3))
    torch.testing.assert_close(noise.log_likelihood(y, ax), expected)
    assert bool(torch.isfinite(noise.log_likelihood(y, torch.zeros_like(ax))).all())  # intensity floored at zero


def test_poisson_sampling_statistics_and_errors():
    rate = 20.0
    noise = invgen.noise("poisson", rate=rate)
    ax = torch.full((8, 1, 50, 50), 0.4, dtype=torch.float64)
    y = noise.sample(ax, generator=torch.Generator().manual_seed(0))
    counts = y * rate
    torch.testing.assert_close(counts, counts.round())  # whole photon counts
    n = y.numel()
    var = 0.4 / rate
    assert abs(float(y.mean()) - 0.4) < 4 * math.sqrt(var / n)
    assert float(y.var()) == pytest.approx(var, rel=0.05)
    assert torch.equal(y, noise.sample(ax, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(RangeError, match=r"expected A\(x\) >= 0, got a minimum of -0\.1"):
        noise.sample(torch.full((1, 1, 2, 2), -0.1))
    with pytest.raises(RangeError, match=r"expected a finite rate > 0, got 0\.0"):
        PoissonNoise(0)


def test_noise_by_name_and_config_round_trip():
    for model in (GaussianNoise(0.05), PoissonNoise(30.0)):
        config = model.config()
        rebuilt = invgen.noise(**config)
        assert type(rebuilt) is type(model) and rebuilt.config() == config
    with pytest.raises(UnknownNameError, match=r"unknown noise model \'laplace\' \(known: gaussian, poisson\)"):
        invgen.noise("laplace")
