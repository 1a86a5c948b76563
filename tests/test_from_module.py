"""``invgen.priors.from_module``: the analytic Gaussian prior written as a network in each parametrisation (eps, x0,
v, edm) must give back the exact denoiser, score and solver answers, on any data range."""

from __future__ import annotations

import pytest
import torch

import invgen
from invgen.errors import ShapeError
from invgen.priors import VPSchedule, from_module
from invgen.priors.vp import VPTimesteps

F64 = torch.float64
SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    d = 16
    a = torch.randn(d, d, generator=g, dtype=F64) / 4
    mean = 0.3 + 0.4 * torch.rand(SHAPE, generator=g, dtype=F64)
    return invgen.prior("gaussian", mean=mean, cov=a @ a.T + 0.01 * torch.eye(d, dtype=F64))


class GaussianNet(torch.nn.Module):
    """The exact network of a Gaussian prior in one parametrisation, on the data range ``(lo, hi)``."""

    def __init__(self, prior, parametrization, data_range=(-1.0, 1.0), schedule=None):
        super().__init__()
        self.prior, self.p = prior, parametrization
        self.lo, self.r = data_range[0], data_range[1] - data_range[0]
        self.steps = VPTimesteps(schedule.alphas_cumprod()) if schedule is not None else None
        self.calls = []

    def forward(self, x, cond):
        self.calls.append(cond.detach().clone())
        if self.p == "edm":  # x = x0 + sigma n on the data scale, cond = sigma (B,)
            s = cond.reshape(-1, 1, 1, 1).to(x.dtype)
            return self.lo + self.r * self.prior.denoise((x - self.lo) / self.r, s.reshape(-1) / self.r)
        s = self.steps.sigma(cond).to(x.dtype).reshape(-1, 1, 1, 1)  # VP: cond = t, x = sqrt(abar) (x0 + s eps)
        a = torch.rsqrt(1 + s**2)
        xd = x / a
        x0 = self.lo + self.r * self.prior.denoise((xd - self.lo) / self.r, s.reshape(-1) / self.r)
        eps = (xd - x0) / s
        if self.p == "eps":
            return eps
        if self.p == "x0":
            return x0
        return a * eps - (s * a) * x0  # v = sqrt(abar) eps - sqrt(1 - abar) x0


CASES = [
    ("eps", (-1.0, 1.0)),
    ("x0", (-1.0, 1.0)),
    ("v", (-1.0, 1.0)),
    ("edm", (-1.0, 1.0)),
    ("eps", (0.0, 1.0)),
    ("v", (0.0, 255.0)),
    ("edm", (0.0, 1.0)),
]


def _wrap(gaussian, parametrization, data_range):
    sched = None if parametrization == "edm" else VPSchedule()
    net = GaussianNet(gaussian, parametrization, data_range, sched)
    prior = from_module(net, parametrization, schedule=sched, data_range=data_range, image_shape=SHAPE)
    return net, prior


@pytest.mark.parametrize(("parametrization", "data_range"), CASES)
def test_each_parametrisation_gives_the_exact_denoiser_and_score(gaussian, parametrization, data_range):
    net, prior = _wrap(gaussian, parametrization, data_range)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, *SHAPE, generator=g, dtype=F64)
    lo, hi = prior.sigma_min, prior.sigma_max  # levels inside the schedule, between training levels

    def level(u):
        return lo * (hi / lo) ** u

    for sigma in (
        level(0.05),
        level(0.3),
        level(0.6),
        level(0.95),
        torch.tensor([level(0.1), level(0.5), level(0.9)], dtype=F64),
    ):
        noisy = x + torch.as_tensor(sigma, dtype=F64).reshape(-1, 1, 1, 1) * torch.randn(
            x.shape, generator=g, dtype=F64
        )
        torch.testing.assert_close(prior.denoise(noisy, sigma), gaussian.denoise(noisy, sigma), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(prior.score(noisy, sigma), gaussian.score(noisy, sigma), rtol=1e-7, atol=1e-7)
    if parametrization == "edm":  # the network sees the level on its data scale
        torch.testing.assert_close(net.calls[-1], sigma * (data_range[1] - data_range[0]))
    else:  # and a VP network the continuous timestep of that level
        t = net.calls[-1]
        assert t.dtype == F64 and 0 < float(t.min()) < float(t.max()) < 999
        assert not bool((t == t.round()).all())


@pytest.mark.parametrize(("parametrization", "data_range"), [("eps", (-1.0, 1.0)), ("edm", (0.0, 1.0))])
def test_a_solver_gives_the_same_samples_through_the_wrapped_network(gaussian, parametrization, data_range):
    _, prior = _wrap(gaussian, parametrization, data_range)
    op = invgen.operator("inpaint", mask="random", ratio=0.5, noise=invgen.noise("gaussian", std=0.05))
    x = gaussian.decode(torch.randn(2, 16, generator=torch.Generator().manual_seed(2), dtype=F64)).clamp(0, 1)
    y = op.measure(x, generator=torch.Generator().manual_seed(3))
    for solver in ("ddnm", "dps"):
        ours = invgen.solve(y, op, prior, solver=solver, steps=20, n_samples=2, seed=4, progress=False)
        exact = invgen.solve(y, op, gaussian, solver=solver, steps=20, n_samples=2, seed=4, progress=False)
        torch.testing.assert_close(ours.samples, exact.samples, rtol=1e-6, atol=1e-6)


def test_discrete_timesteps_are_exact_at_training_levels_only(gaussian):
    sched = VPSchedule()
    net = GaussianNet(gaussian, "eps", schedule=sched)
    prior = from_module(net, "eps", schedule=sched, timesteps="discrete")
    x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(5), dtype=F64)
    level = float(sched.sigmas()[300]) / 2  # a training level on the [0, 1] scale
    torch.testing.assert_close(prior.denoise(x, level), gaussian.denoise(x, level), rtol=1e-9, atol=1e-9)
    assert float(net.calls[-1][0]) == 300.0
    between = 0.5 * (float(sched.sigmas()[300]) + float(sched.sigmas()[301])) / 2
    assert float((prior.denoise(x, between) - gaussian.denoise(x, between)).abs().max()) > 1e-6
    assert float(net.calls[-1][0]) in (300.0, 301.0)


def test_learned_variance_halves_are_dropped_and_diffusers_outputs_unwrapped(gaussian):
    class WithVariance(GaussianNet):
        def forward(self, x, t):
            eps = super().forward(x, t)
            return type("Out", (), {"sample": torch.cat([eps, torch.full_like(eps, 7.0)], dim=1)})()

    sched = VPSchedule()
    prior = from_module(WithVariance(gaussian, "eps", schedule=sched), "eps", schedule=sched)
    x = torch.rand(2, *SHAPE, dtype=F64)
    torch.testing.assert_close(prior.denoise(x, 0.1), gaussian.denoise(x, 0.1), rtol=1e-9, atol=1e-9)
    assert prior.learned_variance is True


def test_schedules_by_name_config_and_tensor_agree():
    by_name = from_module(torch.nn.Identity(), "eps", schedule="linear")
    by_cfg = from_module(torch.nn.Identity(), "eps", schedule={"beta_schedule": "linear", "num_train_timesteps": 1000})
    by_tensor = from_module(torch.nn.Identity(), "eps", schedule=VPSchedule().alphas_cumprod())
    torch.testing.assert_close(by_name.timesteps.alphas_cumprod, by_tensor.timesteps.alphas_cumprod, rtol=1e-6, atol=0)
    assert by_name.schedule == by_cfg.schedule == VPSchedule() and by_tensor.schedule is None
    cosine = from_module(torch.nn.Identity(), "eps", schedule="cosine")
    assert cosine.schedule is None and cosine.sigma_max > 100 * by_name.sigma_max  # abar_T of the cosine is ~0
    assert by_name.sigma_min == pytest.approx((1e-4 / (1 - 1e-4)) ** 0.5 / 2, rel=1e-12)


def test_bad_arguments_say_what_was_expected():
    net = torch.nn.Identity()
    with pytest.raises(ValueError, match="parametrization: expected one of"):
        from_module(net, "score")
    with pytest.raises(ValueError, match="schedule: expected one of"):
        from_module(net, "eps", schedule="sigmoid")
    with pytest.raises(ValueError, match="needs its VP training schedule"):
        from_module(net, "x0", schedule=None)
    with pytest.raises(ValueError, match="give schedule=None"):
        from_module(net, "edm", schedule="cosine")
    with pytest.raises(ValueError, match="data_range: expected"):
        from_module(net, "eps", data_range=(1.0, -1.0))
    with pytest.raises(TypeError, match="callable"):
        from_module("not a network", "eps")
    prior = from_module(lambda x, t: x[:, :1], "eps", channels=2)
    with pytest.raises(ValueError, match=r"returned shape \(1, 1, 4, 4\) for an input of \(1, 2, 4, 4\)"):
        prior.denoise(torch.zeros(1, 2, 4, 4), 0.1)
    with pytest.raises(ShapeError):
        prior.denoise(torch.zeros(1, 3, 4, 4), 0.1)
    with pytest.raises(ValueError, match="sigma > 0"):
        prior.score(torch.zeros(1, 2, 4, 4), 0.0)
