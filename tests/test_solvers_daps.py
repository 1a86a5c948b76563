"""DAPS (decoupled annealing posterior sampling), checked piece by piece and measured against exact posteriors.

* The pieces: the annealing levels are the reference's ``poly-7`` (Karras) spacing; the probability-flow ODE of step
  (a) converges to the exact ODE map of a Gaussian prior; the Langevin of step (b), run long at one level, samples its
  target ``N(x0_hat, r^2 I) p(y | x0)`` (a denoiser with a constant answer makes ``x0_hat`` known), with the operator's
  likelihood and with the reference's fixed ``tau``.
* The exactness table: the five linear GMM problems of tests/oracle.py, sliced W2 to exact posterior samples and
  mixture-weight error, printed and pinned (``GOLDEN``, rtol 0.3). DAPS is approximate: its ``p(x0 | x_s)`` is a
  Gaussian of std ``sigma_s`` around an ODE estimate, and the reference's Langevin step (tuned with its data std
  ``tau = 0.01`` on [-1, 1], 5-20x below these problems' noise) mixes slowly under the true likelihood, so the samples
  stay close to the prior: 4-10x the SW floor, 2-13x the weight-error floor, the sample variance 2.6x the exact one
  on denoising. The values are measurements. The default run uses 25 annealing levels (125 NFE, 20 s); the paper's
  defaults (200 levels x 5 ODE steps, 2 minutes) are pinned under ``-m slow``.
* The nonlinear ``sketch`` operator: finite samples, closer to y than prior samples; NFE through ``invgen.solve`` is
  ``annealing_steps x ode_steps``; option errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import CASES, N, gen, problem
from oracle import gaussian as _noise

import invgen
from invgen.errors import MissingCapabilityError, RangeError
from invgen.solvers.daps import PRESETS, daps, pf_ode, poly_sigmas
from invgen.solvers.ddpm import ddpm
from invgen.solvers.schedules import karras_sigmas

F64 = torch.float64
GOLDEN_RTOL = 0.3
GOLDEN_WEIGHT_ATOL = 0.01
SETTINGS = {"fast": {"annealing_steps": 25}, "paper": {}}  # fast: 125 NFE, paper: 1000 NFE
# (sliced W2, weight error) per problem, measured on this suite's seeds (CPU, float64)
GOLDEN = {
    "fast": {
        "identity": (0.0633, 0.2861),
        "inpaint": (0.0423, 0.1469),
        "superres": (0.0450, 0.2550),
        "colorize": (0.0384, 0.0618),
        "sensing": (0.0473, 0.2795),
    },
    "paper": {
        "identity": (0.0642, 0.2478),
        "inpaint": (0.0459, 0.1117),
        "superres": (0.0445, 0.2308),
        "colorize": (0.0431, 0.0729),
        "sensing": (0.0474, 0.2609),
    },
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Constant(invgen.Prior):
    """A denoiser that always answers ``value``: the ODE estimate ``x0_hat`` is then ``value`` exactly."""

    name = "constant"
    capabilities = frozenset({"denoiser"})

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def denoise(self, x, sigma):
        return torch.full_like(x, self.value)


def test_annealing_levels_are_the_reference_poly7_spacing():
    levels = poly_sigmas(200, 50.0, 0.05)
    assert len(levels) == 201 and levels[-1] == 0.0
    torch.testing.assert_close(torch.tensor(levels[:-1], dtype=F64), karras_sigmas(200, 0.05, 50.0), rtol=1e-12, atol=0)
    # the reference's formula on [-1, 1], halved: (100^(1/7) + r (0.1^(1/7) - 100^(1/7)))^7 / 2 at r = 1/3
    assert poly_sigmas(4, 50.0, 0.05)[1] == pytest.approx(
        (100 ** (1 / 7) + (0.1 ** (1 / 7) - 100 ** (1 / 7)) / 3) ** 7 / 2
    )
    assert poly_sigmas(1, 3.0, 0.1) == [3.0, 0.0]
    assert {k: v[0] * v[1] for k, v in PRESETS.items()} == {"default": 1000, "1k": 1000, "4k": 4000}


def test_ode_estimate_converges_to_the_exact_flow_of_a_gaussian_prior():
    """For a prior N(m, C) the probability-flow ODE from level s to 0 maps x to m + C^(1/2) (C + s^2)^(-1/2) (x - m);
    Euler on the poly-7 levels converges to it at first order (measured: 0.16, 0.016, 0.0016 for 5, 50, 500 steps)."""
    from invgen_plugins.analytic.gaussian import default_gaussian

    prior = default_gaussian((1, 4, 4))
    mean, cov = prior.mean.reshape(-1).to(F64), prior.cov.to(F64)
    x = 0.5 + 2.0 * torch.randn(8, 1, 4, 4, generator=gen(0), dtype=F64)
    evals, evecs = torch.linalg.eigh(cov)
    scale = evecs @ torch.diag((evals / (evals + 4.0)).sqrt()) @ evecs.T  # s = 2
    exact = (mean + (x.reshape(8, -1) - mean) @ scale.T).reshape(x.shape)
    errors = [float((pf_ode(prior, x, 2.0, n, 1e-4) - exact).abs().max()) for n in (5, 50, 500)]
    assert 8 < errors[0] / errors[1] < 12 and 8 < errors[1] / errors[2] < 12 and errors[2] < 2e-3, errors  # Euler
    torch.testing.assert_close(pf_ode(prior, x, 2.0, 1, 1e-4), prior.denoise(x, 2.0))


@pytest.mark.parametrize("tau", [None, 0.2])
def test_langevin_samples_its_gaussian_target(tau):
    """One level at sigma = r = 0.1 with x0_hat = c: the Langevin's target for the identity operator is Gaussian with
    precision 1 / r^2 + 1 / std^2 and mean (c / r^2 + y / std^2) / precision (std = tau when given)."""
    std, r, c = 0.05, 0.1, 0.3
    op = invgen.operator("identity", noise=_noise(std))
    y = torch.full((1, 1, 2, 2), 0.6, dtype=F64)
    kw = {"annealing_steps": 1, "sigma_max": r, "sigma_min": r, "langevin_steps": 2000, "lr": 2e-4}
    s = daps(_Constant(c), op, y, n_samples=2000, generator=gen(0), tau=tau, **kw)
    data_std = tau or std
    precision = 1 / r**2 + 1 / data_std**2
    mean, var = (c / r**2 + 0.6 / data_std**2) / precision, 1 / precision
    assert float((s.mean(0) - mean).abs().max()) < 4 * math.sqrt(var / 2000) + 2e-3
    ratio = s.var(0) / var  # ULA's O(step) bias: the step times the precision is 0.05 to 0.1
    assert float(ratio.min()) > 0.85 and float(ratio.max()) < 1.2, ratio


@pytest.mark.parametrize("setting", [pytest.param("fast"), pytest.param("paper", marks=pytest.mark.slow)])
def test_exactness_table(setting, capsys):
    options = SETTINGS[setting]
    rows = {}
    for name in CASES:
        pb = problem(name)
        samples = daps(pb.prior, pb.op, pb.y, n_samples=N, generator=gen(1), **options)
        assert samples.shape == (N, 1, *pb.prior.image_shape)
        rows[name] = (*pb.stats(samples[:, 0]), float(pb.sw_floor.max()), float(pb.we_floor.max()))
    with capsys.disabled():
        print(f"\n[exactness] daps {setting} {options}")
        for name, (sw, we, fsw, fwe) in rows.items():
            print(
                f"  {name:>9}: SW {sw:.4f} (floor max {fsw:.4f}, x{sw / fsw:.2f}) | weight err {we:.4f} "
                f"(floor {fwe:.4f}, x{we / fwe:.2f})"
            )
    for name, (sw, we, _, _) in rows.items():
        g_sw, g_we = GOLDEN[setting][name]
        assert sw == pytest.approx(g_sw, rel=GOLDEN_RTOL), name
        assert we == pytest.approx(g_we, rel=GOLDEN_RTOL, abs=GOLDEN_WEIGHT_ATOL), name


def test_daps_on_the_nonlinear_sketch_operator():
    prior = invgen.prior("gmm", image_shape=(1, 8, 8), seed=0)
    sketch = invgen.operator("sketch", noise=_noise(0.05))
    x = prior.sample(2, generator=gen(0), dtype=F64).clamp(0, 1)
    y = sketch.measure(x, generator=gen(1))
    s = daps(prior, sketch, y, n_samples=16, generator=gen(2), annealing_steps=20, ode_steps=2)
    assert s.shape == (16, 2, 1, 8, 8) and bool(torch.isfinite(s).all())
    unconditional = ddpm(prior, sketch, y, n_samples=16, generator=gen(2), steps=100)

    def residual(z):
        return (y.repeat(16, 1, 1, 1) - sketch(z.reshape(32, 1, 8, 8))).reshape(16, 2, -1).norm(dim=2).mean(0)

    assert bool((residual(s) < 0.7 * residual(unconditional)).all()), (residual(s), residual(unconditional))


def test_other_noise_models_and_noiseless_data():
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    x = prior.sample(1, generator=gen(0), dtype=F64).clamp(0.05, 1)
    kw = {"n_samples": 4, "generator": gen(1), "annealing_steps": 5, "ode_steps": 2, "langevin_steps": 10}
    poisson = invgen.operator("identity", noise=invgen.noise("poisson", rate=50.0))
    assert bool(torch.isfinite(daps(prior, poisson, poisson.measure(x, generator=gen(2)), **kw)).all())
    noiseless = invgen.operator("inpaint", mask="half")
    with pytest.raises(RangeError, match="Gaussian noise std is 0, so there is no likelihood; give tau > 0"):
        daps(prior, noiseless, noiseless.measure(x), **kw)
    assert bool(torch.isfinite(daps(prior, noiseless, noiseless.measure(x), tau=0.005, **kw)).all())


def test_step_cap_keeps_compressed_sensing_stable():
    """Sensing with m = 6 of 64 pixels at noise 0.01 has a data curvature ||A||^2 / std^2 of about 1.4e5: the
    reference's first step (2.5e-5 here) times it is about 3.6, where Langevin diverges; the cap keeps it at 1."""
    prior = invgen.prior("gmm", image_shape=(1, 8, 8), seed=0)
    op = invgen.operator("sensing", m=6, seed=0, noise=_noise(0.01))
    y = op.measure(prior.sample(1, generator=gen(0), dtype=F64).clamp(0, 1), generator=gen(1))
    kw = {"n_samples": 8, "generator": gen(2), "annealing_steps": 5, "ode_steps": 1, "langevin_steps": 50}
    wild = daps(prior, op, y, step_cap=False, **kw)
    assert not bool(torch.isfinite(wild).all()) or float(wild.abs().max()) > 1e3  # the failure the cap prevents
    tame = daps(prior, op, y, **kw)
    assert bool(torch.isfinite(tame).all()) and float((tame - 0.5).abs().max()) < 2.0


@pytest.mark.parametrize(
    ("options", "nfe"),
    [
        ({"annealing_steps": 4, "ode_steps": 3, "langevin_steps": 5}, 12),
        ({"preset": "4k", "annealing_steps": 2, "langevin_steps": 5}, 20),
        ({"preset": "1k", "annealing_steps": 3, "langevin_steps": 5}, 12),
    ],
)
def test_solve_shapes_reproducibility_and_nfe(options, nfe):
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1), generator=gen(1))
    a = invgen.solve(y, op, prior, solver="daps", n_samples=4, seed=0, **options)
    b = invgen.solve(y, op, prior, solver="daps", n_samples=4, seed=0, **options)
    c = invgen.solve(y, op, prior, solver="daps", n_samples=4, seed=1, **options)
    assert a.samples.shape == (4, 2, 1, 4, 4) and bool(torch.isfinite(a.samples).all())
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.nfe == nfe, "annealing_steps x ode_steps batched denoiser calls"
    assert a.solver["name"] == "daps" and "daps" in invgen.compatible_solvers(prior)


def test_option_errors():
    class ScoreOnly(invgen.Prior):
        name = "score-only"
        capabilities = frozenset({"score"})

        def score(self, x, sigma=0.0):
            return -(x - 0.5)

    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(MissingCapabilityError, match=r"'daps' needs the capability 'denoiser'.*'score-only'"):
        invgen.solve(y, op, ScoreOnly(), solver="daps")
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)

    def run(**options):
        return daps(prior, op, y, n_samples=1, generator=gen(0), **options)

    with pytest.raises(ValueError, match=r"daps: preset must be one of \['1k', '4k', 'default'\], got '2k'"):
        run(preset="2k")
    with pytest.raises(ValueError, match="daps: annealing_steps must be an integer >= 1, got 0"):
        run(annealing_steps=0)
    with pytest.raises(ValueError, match=r"daps: ode_steps must be an integer >= 1, got 2\.5"):
        run(ode_steps=2.5)
    with pytest.raises(ValueError, match="daps: langevin_steps must be an integer >= 1, got True"):
        run(langevin_steps=True)
    with pytest.raises(RangeError, match="daps: lr must be finite and > 0, got -1"):
        run(lr=-1)
    with pytest.raises(RangeError, match=r"lr_min_ratio must lie in \[0, 1\], got 2"):
        run(lr_min_ratio=2)
    with pytest.raises(TypeError, match="daps: step_cap must be True or False, got 1"):
        run(step_cap=1)
    with pytest.raises(RangeError, match="daps: tau must be finite and > 0, got 0"):
        run(tau=0)
    with pytest.raises(RangeError, match=r"ode_sigma_min < sigma_min <= sigma_max, got 0\.005, 0\.05, 0\.01"):
        run(sigma_max=0.01)
    with pytest.raises(RangeError, match=r"ode_sigma_min < sigma_min <= sigma_max, got 0\.1, 0\.05, 50"):
        run(ode_sigma_min=0.1)
