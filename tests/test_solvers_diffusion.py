"""Diffusion solvers (DDPM, DDIM, DPS, DiffPIR, annealed Langevin), checked against exact answers.

* DDPM and DDIM sample the analytic Gaussian-mixture prior: their samples must be as close to exact prior samples as
  an independent exact set is (the noise floor of tests/oracle.py, within ``FLOOR_FACTOR``).
* The VE ancestral step equals DDPM's VP posterior ``q(x_{t-1} | x_t, x0)``, and DDIM with ``eta = 0`` is
  deterministic given ``x_T``.
* The exactness table: every posterior solver on the five linear GMM problems of tests/oracle.py, sliced W2 to exact
  posterior samples and mixture-weight error, printed and pinned (``GOLDEN``). Annealed Langevin (with a final stage
  at ``sigma_min``) must reach the noise floor; DPS and DiffPIR are approximate samplers, measured, not excused.
  DPS also runs on the nonlinear sketch operator (finite, and closer to the data than prior samples).
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import (
    CASES,
    N,
    directions,
    gen,
    noise_floor,
    overlapping_mixture,
    problem,
    sliced_wasserstein,
    weight_error,
)
from oracle import gaussian as _noise

import invgen
from invgen.errors import DivergenceError, MissingCapabilityError, RangeError
from invgen.solvers.ddim import ddim, ddim_step
from invgen.solvers.ddpm import ancestral_step, ddpm
from invgen.solvers.diffpir import diffpir
from invgen.solvers.dps import dps
from invgen.solvers.langevin import annealed_langevin

F64 = torch.float64
FLOOR_FACTOR = 1.2

# The settings of the exactness table (name: (function, options)).
SOLVERS = {
    "annealed": (annealed_langevin, {"final_steps": 1000}),  # Song & Ermon defaults + 1000 steps at sigma_min
    "dps": (dps, {"steps": 200}),  # paper's zeta = 1, norm guidance, DDPM (eta = 1)
    "dps_sq": (dps, {"steps": 200, "guidance": "squared"}),
    "diffpir": (diffpir, {}),  # paper's 100 steps, lambda = 7 (reference scale), zeta = 0.3, quad spacing
}
# Measured on this suite's seeds (CPU, float64): (sliced W2, weight error) per solver and problem. SW is pinned to
# GOLDEN_RTOL, the weight error to GOLDEN_RTOL or GOLDEN_WEIGHT_ATOL, whichever is larger; a change beyond them means
# the sampler changed. DPS with the paper's zeta = 1 is far off on these 16-pixel problems: its norm-gradient step
# does not shrink with the image size (module docstring of invgen/solvers/dps.py), so it overshoots.
GOLDEN = {
    "identity": {
        "annealed": (0.0054, 0.0105),
        "dps": (0.0579, 0.2378),
        "dps_sq": (0.0203, 0.0924),
        "diffpir": (0.0078, 0.0343),
    },
    "inpaint": {
        "annealed": (0.0056, 0.0039),
        "dps": (0.0267, 0.0214),
        "dps_sq": (0.0205, 0.0467),
        "diffpir": (0.0104, 0.0377),
    },
    "superres": {
        "annealed": (0.0075, 0.0218),
        "dps": (0.0297, 0.1878),
        "dps_sq": (0.0260, 0.1763),
        "diffpir": (0.0106, 0.0736),
    },
    "colorize": {
        "annealed": (0.0079, 0.0270),
        "dps": (0.0470, 0.2778),
        "dps_sq": (0.0284, 0.1481),
        "diffpir": (0.0084, 0.0285),
    },
    "sensing": {
        "annealed": (0.0069, 0.0133),
        "dps": (0.1217, 0.6036),
        "dps_sq": (0.0160, 0.1159),
        "diffpir": (0.0083, 0.0353),
    },
}
GOLDEN_RTOL = 0.3
GOLDEN_WEIGHT_ATOL = 0.015


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- unconditional sampling ---------------------------------------------------------------------------------------
def test_ddpm_and_ddim_sample_the_prior(capsys):
    prior = overlapping_mixture((1, 4, 4))
    op = invgen.operator("identity")
    y = torch.zeros(1, 1, 4, 4, dtype=F64)  # only its shape matters
    dirs = directions(prior.d, 200)
    floor_sw = float(noise_floor(lambda n, g: prior.sample(n, g, dtype=F64), N, dirs, pairs=20).max())
    mix = (prior.weights, prior.means, prior.covs)
    floor_we = max(weight_error(prior.sample(N, gen(300 + i), dtype=F64), *mix) for i in range(20))
    exact = prior.sample(N, gen(99), dtype=F64)
    runs = {
        "ddpm 250": ddpm(prior, op, y, n_samples=N, generator=gen(1), steps=250),
        "ddim 100": ddim(prior, op, y, n_samples=N, generator=gen(1), steps=100),
    }
    for label, s in runs.items():
        assert s.shape == (N, 1, 1, 4, 4)
        sw, we = sliced_wasserstein(s[:, 0], exact, dirs), weight_error(s[:, 0], *mix)
        with capsys.disabled():
            print(
                f"\n[prior] {label}: SW {sw:.4f} (x{sw / floor_sw:.2f} floor max {floor_sw:.4f}), weight err {we:.4f} "
                f"(floor max {floor_we:.4f})"
            )
        assert sw <= FLOOR_FACTOR * floor_sw
        assert we <= FLOOR_FACTOR * floor_we


def test_ve_ancestral_step_is_the_vp_ddpm_posterior():
    """q(x_{t'} | x_t, x0) of a linear-beta DDPM (strided: t' < t - 1) equals the VE step after the rescaling."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar = torch.cumprod(1 - betas, 0)
    g = gen(0)
    x0 = torch.rand(3, 1, 4, 4, generator=g, dtype=F64)  # [0, 1] image
    n = torch.randn(3, 1, 4, 4, generator=g, dtype=F64)
    for t, tp in ((999, 979), (500, 499), (120, 60), (10, 0)):
        a, ap = abar[t], abar[tp]
        beta = 1 - a / ap  # the strided step's beta
        x0v = 2 * x0 - 1
        xt = a.sqrt() * x0v + (1 - a).sqrt() * torch.randn(x0.shape, generator=g, dtype=F64)
        mean = ap.sqrt() * beta / (1 - a) * x0v + (a / ap).sqrt() * (1 - ap) / (1 - a) * xt
        std = ((1 - ap) / (1 - a) * beta).sqrt()
        vp_next = mean + std * n
        s, sp = float(((1 - a) / a).sqrt() / 2), float(((1 - ap) / ap).sqrt() / 2)
        x_ve = (xt / a.sqrt() + 1) / 2
        ve_next = ancestral_step(x_ve, x0, s, sp, n)
        torch.testing.assert_close(ve_next, (vp_next / ap.sqrt() + 1) / 2, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ddim_step(x_ve, x0, s, sp, 1.0, n), ve_next, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ancestral_step(x_ve, x0, 0.3, 0.0, n), x0)


def test_ddim_eta0_is_deterministic_given_x_start():
    prior = overlapping_mixture((1, 4, 4))
    op = invgen.operator("identity")
    y = torch.zeros(2, 1, 4, 4, dtype=F64)
    x_t = 0.5 + 80 * torch.randn(3, 2, 1, 4, 4, generator=gen(0), dtype=F64)
    a = ddim(prior, op, y, n_samples=3, generator=gen(1), steps=20, x_start=x_t)
    b = ddim(prior, op, y, n_samples=3, generator=gen(2), steps=20, x_start=x_t)
    c = ddim(prior, op, y, n_samples=3, generator=gen(1), steps=20, x_start=x_t, eta=1.0)
    d = ddim(prior, op, y, n_samples=3, generator=gen(2), steps=20, x_start=x_t, eta=1.0)
    assert torch.equal(a, b) and not torch.equal(c, d)
    assert a.shape == (3, 2, 1, 4, 4) and not torch.equal(a[0], a[1])
    e = ddim(prior, op, y, n_samples=3, generator=gen(1), steps=20, eta=1.0)
    torch.testing.assert_close(e, ddpm(prior, op, y, n_samples=3, generator=gen(1), steps=20))


# -- the exactness table ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_exactness_table(name, capsys):
    pb = problem(name)
    floor_sw, floor_we = float(pb.sw_floor.max()), float(pb.we_floor.max())
    stats = {}
    for label, (fn, options) in SOLVERS.items():
        out = fn(pb.prior, pb.op, pb.y, n_samples=N, generator=gen(1), **options)
        samples = out[0] if isinstance(out, tuple) else out
        assert samples.shape == (N, 1, *pb.prior.image_shape)
        stats[label] = pb.stats(samples[:, 0])
    with capsys.disabled():
        cells = " | ".join(
            f"{k} {sw:.4f} (x{sw / floor_sw:.2f}) w {we:.4f} (x{we / floor_we:.2f})" for k, (sw, we) in stats.items()
        )
        print(f"\n[diffusion exactness] {name:>9} | floor max SW {floor_sw:.4f} w {floor_we:.4f} | {cells}")
    sw, we = stats["annealed"]
    assert sw <= FLOOR_FACTOR * floor_sw, f"annealed Langevin SW {sw:.4g} above the noise floor {floor_sw:.4g}"
    assert we <= FLOOR_FACTOR * floor_we, f"annealed Langevin weight error {we:.4g} above the floor {floor_we:.4g}"
    for label, (sw, we) in stats.items():
        golden_sw, golden_we = GOLDEN[name][label]
        assert sw == pytest.approx(golden_sw, rel=GOLDEN_RTOL), label
        assert we == pytest.approx(golden_we, rel=GOLDEN_RTOL, abs=GOLDEN_WEIGHT_ATOL), label


def test_dps_on_the_nonlinear_sketch_operator():
    prior = invgen.prior("gmm", image_shape=(1, 8, 8), seed=0)
    sketch = invgen.operator("sketch", noise=_noise(0.05))
    x = prior.sample(2, generator=gen(0), dtype=F64).clamp(0, 1)
    y = sketch.measure(x, generator=gen(1))
    s, extras = dps(prior, sketch, y, n_samples=16, generator=gen(2), steps=100)
    assert s.shape == (16, 2, 1, 8, 8) and bool(torch.isfinite(s).all())
    unconditional = ddpm(prior, sketch, y, n_samples=16, generator=gen(2), steps=100)
    resid = (y.repeat(16, 1, 1, 1) - sketch(unconditional.reshape(32, 1, 8, 8))).reshape(16, 2, -1).norm(dim=2)
    assert bool((extras["residual"] < 0.7 * resid.mean(0)).all()), (extras["residual"], resid.mean(0))


def test_diffpir_data_step_cg_and_gradient_paths_match_the_svd():
    class NoSVD(invgen.operators.base.LinearOperator):
        name = "superres-no-svd"

        def __init__(self, inner):
            super().__init__(inner.noise)
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

        def adjoint(self, y):
            return self.inner.adjoint(y)

        def output_shape(self, x_shape):
            return self.inner.output_shape(x_shape)

        def input_shape(self, y_shape):
            return self.inner.input_shape(y_shape)

    pb = problem("superres")
    ref = diffpir(pb.prior, pb.op, pb.y, n_samples=8, generator=gen(1), steps=30)
    cg = diffpir(pb.prior, NoSVD(pb.op), pb.y, n_samples=8, generator=gen(1), steps=30)
    torch.testing.assert_close(cg, ref, rtol=0, atol=1e-5)
    noiseless = invgen.operator("superres", scale=2, kernel="block")
    s = diffpir(pb.prior, noiseless, pb.y, n_samples=4, generator=gen(1), steps=30)
    torch.testing.assert_close(noiseless(s.reshape(4, 1, 4, 4)), pb.y.expand(4, 1, 2, 2), rtol=0, atol=1e-9)
    sketch = invgen.operator("sketch", noise=_noise(0.05))
    y = sketch.measure(torch.full((1, 1, 4, 4), 0.5, dtype=F64) + 0.3 * torch.eye(4, dtype=F64), generator=gen(0))
    s = diffpir(pb.prior, sketch, y, n_samples=4, generator=gen(1), steps=10, prox_steps=5)
    assert bool(torch.isfinite(s).all())


def test_quad_spacing_is_the_reference_codes_timesteps():
    """``vp_sigmas(spacing="quad")``: timesteps ``T - 1 - floor(sqrt(linspace(0, T^2, n)))`` (last one 0), strictly
    descending; golden timesteps for n = 10 written out by hand from that formula."""
    from invgen.solvers.schedules import vp_sigmas

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar = torch.cumprod(1 - betas, 0)
    # floor(1000 sqrt(i / 9)) = 0, 333, 471, 577, 666, 745, 816, 881, 942, 1000 (-> 999)
    t = torch.tensor([999, 666, 528, 422, 333, 254, 183, 118, 57, 0])
    torch.testing.assert_close(vp_sigmas(10, spacing="quad"), ((1 - abar[t]) / abar[t]).sqrt() / 2, rtol=1e-12, atol=0)
    uniform = vp_sigmas(10)
    assert float(uniform[0]) == float(vp_sigmas(10, spacing="quad")[0]) and float(uniform[-1]) == pytest.approx(
        0.005, rel=1e-3
    )
    for n in (2, 3, 50, 501):
        sig = vp_sigmas(n, spacing="quad")
        assert sig.shape == (n,) and bool((sig[1:] < sig[:-1]).all()), n
    with pytest.raises(ValueError, match="quad spacing repeats timesteps with 600 steps"):
        vp_sigmas(600, spacing="quad")
    with pytest.raises(ValueError, match="spacing: expected 'uniform' or 'quad', got 'cosine'"):
        vp_sigmas(10, spacing="cosine")


def test_diffpir_weights_the_data_step_on_the_reference_scale(monkeypatch):
    """``rho_i = lambda sigma_y^2 / (2 s_i)^2`` (the reference code's scales) on the quad levels by default, the DDIM
    levels with ``spacing="uniform"``."""
    import invgen.solvers.diffpir as module
    from invgen.solvers.schedules import prior_sigmas

    pb = problem("superres")
    seen = []
    real = module.data_step

    def spy(operator, y, x0, rho, prox_steps=50):
        seen.append(rho)
        return real(operator, y, x0, rho, prox_steps)

    monkeypatch.setattr(module, "data_step", spy)
    std = float(pb.op.noise.std)
    for spacing in ("quad", "uniform"):
        seen.clear()
        diffpir(pb.prior, pb.op, pb.y, n_samples=2, generator=gen(1), steps=12, lam=5.0, spacing=spacing)
        levels = prior_sigmas(pb.prior, 12, spacing=spacing).tolist()
        assert seen == pytest.approx([5.0 * std**2 / (2 * s) ** 2 for s in levels], rel=1e-12), spacing
    with pytest.raises(RangeError, match="diffpir: spacing must be 'quad' or 'uniform', got 'linear'"):
        diffpir(pb.prior, pb.op, pb.y, n_samples=2, generator=gen(1), steps=12, spacing="linear")
    with pytest.raises(ValueError, match="quad spacing repeats timesteps with 600 steps"):
        diffpir(pb.prior, pb.op, pb.y, n_samples=2, generator=gen(1), steps=600)


def test_annealed_langevin_from_a_denoiser_equals_the_score_path():
    """A prior with only a denoiser uses (D(x, s) - x) / s^2, which is the GMM's score (Tweedie)."""

    class DenoiserOnly(invgen.Prior):
        name = "denoiser-only"
        capabilities = frozenset({"denoiser"})

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def denoise(self, x, sigma):
            return self.inner.denoise(x, sigma)

    pb = problem("inpaint")
    kw = {"n_samples": 6, "n_levels": 4, "steps_per_level": 5, "final_steps": 3}
    a = annealed_langevin(pb.prior, pb.op, pb.y, generator=gen(1), **kw)
    b = annealed_langevin(DenoiserOnly(pb.prior), pb.op, pb.y, generator=gen(1), **kw)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


# -- solve() integration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("solver", "options", "nfe"),
    [
        ("dps", {"steps": 20}, 20),
        ("dps", {"steps": 12, "guidance": "squared", "eta": 0.0}, 12),
        ("diffpir", {"steps": 15}, 15),
        ("annealed_langevin", {"n_levels": 3, "steps_per_level": 4, "final_steps": 2}, 14),
        ("ddpm", {"steps": 10}, 10),
        ("ddim", {"steps": 10, "eta": 0.5}, 10),
    ],
)
def test_solve_shapes_reproducibility_and_nfe(solver, options, nfe):
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1), generator=gen(1))
    a = invgen.solve(y, op, prior, solver=solver, n_samples=4, seed=0, **options)
    b = invgen.solve(y, op, prior, solver=solver, n_samples=4, seed=0, **options)
    c = invgen.solve(y, op, prior, solver=solver, n_samples=4, seed=1, **options)
    assert a.samples.shape == (4, 2, 1, 4, 4) and bool(torch.isfinite(a.samples).all())
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.nfe == nfe, "one batched prior call per step"
    assert a.solver["name"] == solver


def test_missing_denoiser_and_option_errors():
    class ScoreOnly(invgen.Prior):
        name = "score-only"
        capabilities = frozenset({"score"})

        def score(self, x, sigma=0.0):
            return -(x - 0.5)

    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5)
    for name in ("dps", "diffpir", "ddpm", "ddim", "annealed_langevin"):
        with pytest.raises(MissingCapabilityError, match=rf"'{name}' needs the capability 'denoiser'.*'score-only'"):
            invgen.solve(y, op, ScoreOnly(), solver=name)
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    kw = {"n_samples": 2, "generator": gen(0)}
    with pytest.raises(ValueError, match="dps: steps must be an integer >= 1, got 0"):
        dps(prior, op, y, steps=0, **kw)
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\], got 1.5"):
        ddim(prior, op, y, eta=1.5, **kw)
    with pytest.raises(ValueError, match="guidance must be one of"):
        dps(prior, op, y, guidance="l1", **kw)
    with pytest.raises(RangeError, match="zeta must be finite and >= 0"):
        dps(prior, op, y, zeta=-1.0, **kw)
    with pytest.raises(RangeError, match="guidance='squared' needs a likelihood"):
        dps(prior, invgen.operator("identity"), y, guidance="squared", **kw)
    with pytest.raises(ValueError, match=r"zeta must lie in \[0, 1\]"):
        diffpir(prior, op, y, zeta=2.0, **kw)
    with pytest.raises(RangeError, match="lam must be finite and > 0"):
        diffpir(prior, op, y, lam=0.0, **kw)
    with pytest.raises(TypeError, match="needs Gaussian observation noise, got 'poisson'"):
        diffpir(prior, invgen.operator("identity", noise=invgen.noise("poisson")), y, **kw)
    with pytest.raises(ValueError, match="n_levels must be an integer >= 1"):
        annealed_langevin(prior, op, y, n_levels=0, **kw)
    with pytest.raises(RangeError, match="eps must be finite and > 0"):
        annealed_langevin(prior, op, y, eps=math.inf, **kw)
    with pytest.raises(RangeError, match="0 < sigma_min <= sigma_max"):
        annealed_langevin(prior, op, y, sigma_min=2.0, **kw)


def test_diffusion_solvers_are_registered_with_their_needs():
    for name in ("ddpm", "ddim", "dps", "diffpir", "annealed_langevin"):
        assert name in invgen.list_solvers()
        assert invgen.registry.get("solvers", name).meta["needs"] == ("denoiser",)
    assert {"dps", "diffpir", "annealed_langevin"} <= set(invgen.compatible_solvers(overlapping_mixture((1, 2, 2))))


def test_annealed_langevin_step_cap_keeps_compressed_sensing_stable():
    """Sensing with m = 12 of 64 pixels has ||A||^2 about 11: at the paper's eps = 2e-5 every high level's step
    times the posterior's curvature is above 2, where ULA diverges (past |x| = 1e6 by step 60, and on to 1e27 when
    nothing stopped it: now a DivergenceError); the default step cap keeps it at
    <= 1 and the chains land on the exact posterior: measured mean error 0.14 posterior std on average (0.33 at
    most; ULA's O(step) bias and the slow directions of this smooth prior), per-pixel variances 0.86-1.20 of the
    exact ones (400 chains)."""
    from invgen_plugins.analytic.gaussian import default_gaussian

    prior = default_gaussian((1, 8, 8))
    op = invgen.operator("sensing", m=12, seed=0, noise=_noise(0.05))
    x = prior.sample(1, gen(0), dtype=F64).clamp(0, 1)
    y = op.measure(x, generator=gen(1))
    post = prior.exact_posterior(op, y)
    kw = {"n_samples": 400, "final_steps": 1000}  # Song & Ermon's 10 x 100, as in the exactness table
    # the failure the cap prevents: uncapped, the chains explode, and the solver stops saying what to change
    with pytest.raises(DivergenceError, match=r"'annealed_langevin' diverged by step \d+ of 2000.*step_cap=True"):
        annealed_langevin(prior, op, y, generator=gen(2), step_cap=False, **kw)
    s = annealed_langevin(prior, op, y, generator=gen(2), **kw)
    sd = torch.diagonal(post.cov[0]).reshape(post.mean.shape).sqrt()
    err = ((s.mean(0) - post.mean) / sd).abs()
    assert float(err.mean()) < 0.2 and float(err.max()) < 0.5, err
    ratio = s.var(0) / sd**2
    assert float(ratio.min()) > 0.8 and float(ratio.max()) < 1.3, ratio
    with pytest.raises(TypeError, match="step_cap"):
        annealed_langevin(prior, op, y, generator=gen(2), step_cap="yes", **kw)
