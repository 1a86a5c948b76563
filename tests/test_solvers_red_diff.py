"""RED-diff (variational posterior sampling by Adam), checked against a transcription of the reference loop and
measured against exact posteriors.

* The reference loop, written on [-1, 1] images with VP states, its mean-squared losses and ``torch.optim.Adam``
  (``lr = 0.25``, betas (0.9, 0.99)), gives the same iterates as our [0, 1]-scale function with ``lr = 0.125``: the
  scale conversion of the module docstring, checked numerically.
* The exactness table: the five linear GMM problems of tests/oracle.py at the paper's settings (1000 steps, lambda
  0.25, sigma_q 0), sliced W2 to exact posterior samples and mixture-weight error, printed and pinned (``GOLDEN``,
  rtol 0.3). RED-diff is an optimiser, not a sampler: the values are measurements.
* What its N samples are: on the inpainting problem the sample variance over the exact posterior variance is pinned
  on the observed pixels (the N optimisations agree: far below 1) and on the missing ones (above 1: there only the
  regulariser acts, whose gradient at low noise is almost pure noise that Adam normalises into steps of size ~lr).
* The nonlinear ``sketch`` operator: finite, closer to y than prior samples; NFE through ``invgen.solve`` is
  ``steps``; option errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import CASES, N, gen, problem
from oracle import gaussian as _noise

import invgen
from invgen.errors import MissingCapabilityError, RangeError
from invgen.solvers.ddpm import ddpm
from invgen.solvers.red_diff import red_diff
from invgen.solvers.schedules import prior_sigmas

F64 = torch.float64
GOLDEN_RTOL = 0.3
GOLDEN_WEIGHT_ATOL = 0.01
# (sliced W2, weight error) per problem at the defaults, measured on this suite's seeds (CPU, float64)
GOLDEN = {
    "identity": (0.0818, 0.4220),
    "inpaint": (0.0156, 0.0428),
    "superres": (0.0305, 0.1899),
    "colorize": (0.0284, 0.1302),
    "sensing": (0.0333, 0.2401),
}
# sample variance / exact posterior variance on the inpainting problem, mean over (observed, missing) pixels
GOLDEN_SPREAD = (0.039, 1.441)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference_loop(prior, op, y, n, generator, steps, lr=0.25, lam=0.25):
    """RED-diff as the reference code runs it, on [-1, 1] images: x' = 2 x - 1, y' = 2 y - A 1 (linear A), VP states
    x_t = sqrt(abar) x0' + sqrt(1 - abar) eps with abar = 1 / (1 + 4 s^2), the network's eps from our denoiser."""
    ys = 2 * y.repeat(n, 1, 1, 1) - op(torch.ones(n, *y.shape[1:], dtype=F64))
    mu = op.pinv(ys).clone().requires_grad_(True)
    # Adam's eps acts on the reference's gradients, which are ours divided by n * M_x (its means over the batch and
    # the pixels): eps = 1e-8 here would be 64x ours; scaled, the two runs are the same arithmetic
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), eps=1e-8 / mu.numel())
    for s in prior_sigmas(prior, steps).tolist():
        abar = 1 / (1 + 4 * s**2)
        eps = torch.randn(mu.shape, generator=generator, dtype=F64)
        with torch.no_grad():
            xt = math.sqrt(abar) * mu + math.sqrt(1 - abar) * eps
            d = 2 * prior.denoise((xt / math.sqrt(abar) + 1) / 2, s) - 1
            et = (xt - math.sqrt(abar) * d) / math.sqrt(1 - abar)
        loss_obs = (ys - op(mu)).pow(2).mean() / 2
        loss_noise = ((et - eps) * mu).mean()
        loss = lam * math.sqrt(1 - abar) / math.sqrt(abar) * loss_noise + loss_obs
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ((mu.detach() + 1) / 2).reshape(n, y.shape[0], *mu.shape[1:])


@pytest.mark.parametrize("name", ["inpaint", "superres"])
def test_matches_the_reference_loop_on_the_reference_scale(name):
    pb = problem(name)
    ours = red_diff(pb.prior, pb.op, pb.y, n_samples=4, generator=gen(3), steps=60)
    ref = _reference_loop(pb.prior, pb.op, pb.y, 4, gen(3), 60)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)  # measured: 3e-14
    assert float((ours - pb.y.mean()).abs().max()) > 1e-2  # it moved


def test_exactness_table(capsys):
    rows = {}
    for name in CASES:
        pb = problem(name)
        samples = red_diff(pb.prior, pb.op, pb.y, n_samples=N, generator=gen(1))
        assert samples.shape == (N, 1, *pb.prior.image_shape)
        rows[name] = (*pb.stats(samples[:, 0]), float(pb.sw_floor.max()), float(pb.we_floor.max()))
    with capsys.disabled():
        print("\n[exactness] red_diff (defaults: 1000 steps, lr 0.125, lambda 0.25, sigma_q 0)")
        for name, (sw, we, fsw, fwe) in rows.items():
            print(
                f"  {name:>9}: SW {sw:.4f} (floor max {fsw:.4f}, x{sw / fsw:.2f}) | weight err {we:.4f} "
                f"(floor {fwe:.4f}, x{we / fwe:.2f})"
            )
    for name, (sw, we, _, _) in rows.items():
        g_sw, g_we = GOLDEN[name]
        assert sw == pytest.approx(g_sw, rel=GOLDEN_RTOL), name
        assert we == pytest.approx(g_we, rel=GOLDEN_RTOL, abs=GOLDEN_WEIGHT_ATOL), name


def test_spread_of_the_samples_against_the_exact_posterior(capsys):
    pb = problem("inpaint")
    observed = pb.op.mask.reshape(pb.prior.image_shape).bool()
    exact_var = torch.diagonal(pb.post.cov[0]).reshape(pb.prior.image_shape)
    s = red_diff(pb.prior, pb.op, pb.y, n_samples=N, generator=gen(1))[:, 0]
    ratio = s.var(0) / exact_var
    spread = (float(ratio[observed].mean()), float(ratio[~observed].mean()))
    with capsys.disabled():
        print(
            f"\n[spread] red_diff inpaint: variance / exact variance, observed {spread[0]:.3f}, missing {spread[1]:.3f}"
        )
    assert spread == pytest.approx(GOLDEN_SPREAD, rel=GOLDEN_RTOL)


def test_red_diff_on_the_nonlinear_sketch_operator():
    prior = invgen.prior("gmm", image_shape=(1, 8, 8), seed=0)
    sketch = invgen.operator("sketch", noise=_noise(0.05))
    x = prior.sample(2, generator=gen(0), dtype=F64).clamp(0, 1)
    y = sketch.measure(x, generator=gen(1))
    s = red_diff(prior, sketch, y, n_samples=16, generator=gen(2), steps=200)
    assert s.shape == (16, 2, 1, 8, 8) and bool(torch.isfinite(s).all())
    unconditional = ddpm(prior, sketch, y, n_samples=16, generator=gen(2), steps=100)

    def residual(z):
        return (y.repeat(16, 1, 1, 1) - sketch(z.reshape(32, 1, 8, 8))).reshape(16, 2, -1).norm(dim=2).mean(0)

    assert bool((residual(s) < 0.7 * residual(unconditional)).all()), (residual(s), residual(unconditional))
    with pytest.raises(TypeError, match="red_diff: init='pinv' needs a linear operator, got the nonlinear 'sketch'"):
        red_diff(prior, sketch, y, n_samples=1, generator=gen(2), init="pinv")


@pytest.mark.parametrize(
    "options",
    [{"steps": 7}, {"steps": 7, "sigma_q": 0.02, "data_term": "likelihood", "weighting": "sqrt", "init": "gray"}],
)
def test_solve_shapes_reproducibility_and_nfe(options):
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(prior.sample(2, generator=gen(0)).clamp(0, 1), generator=gen(1))
    a = invgen.solve(y, op, prior, solver="red_diff", n_samples=4, seed=0, **options)
    b = invgen.solve(y, op, prior, solver="red_diff", n_samples=4, seed=0, **options)
    c = invgen.solve(y, op, prior, solver="red_diff", n_samples=4, seed=1, **options)
    assert a.samples.shape == (4, 2, 1, 4, 4) and bool(torch.isfinite(a.samples).all())
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.nfe == 7, "one batched denoiser call per step"
    assert a.solver["name"] == "red_diff" and "red_diff" in invgen.compatible_solvers(prior)


def test_initialisation_is_the_reference_pseudo_inverse():
    """steps of lr ~ 0 leave mu at its start: A^+ y' on [-1, 1], i.e. y on the observed pixels and gray elsewhere."""
    pb = problem("inpaint")
    s = red_diff(pb.prior, pb.op, pb.y, n_samples=2, generator=gen(0), steps=1, lr=1e-12)
    observed = pb.op.mask.expand_as(pb.y).bool()
    torch.testing.assert_close(s[0][observed], pb.y[observed])
    torch.testing.assert_close(s[0][~observed], torch.full_like(s[0][~observed], 0.5))
    gray = red_diff(pb.prior, pb.op, pb.y, n_samples=2, generator=gen(0), steps=1, lr=1e-12, init="gray")
    torch.testing.assert_close(gray, torch.full_like(gray, 0.5))


def test_option_errors():
    class ScoreOnly(invgen.Prior):
        name = "score-only"
        capabilities = frozenset({"score"})

        def score(self, x, sigma=0.0):
            return -(x - 0.5)

    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(MissingCapabilityError, match=r"'red_diff' needs the capability 'denoiser'.*'score-only'"):
        invgen.solve(y, op, ScoreOnly(), solver="red_diff")
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)

    def run(operator=op, **options):
        return red_diff(prior, operator, y, n_samples=1, generator=gen(0), **options)

    with pytest.raises(ValueError, match="red_diff: steps must be an integer >= 1, got 0"):
        run(steps=0)
    with pytest.raises(RangeError, match="red_diff: lr must be finite and > 0, got 0"):
        run(lr=0)
    with pytest.raises(RangeError, match="red_diff: lam must be finite and >= 0, got -1"):
        run(lam=-1)
    with pytest.raises(RangeError, match="red_diff: sigma_q must be finite and >= 0, got nan"):
        run(sigma_q=float("nan"))
    with pytest.raises(ValueError, match="red_diff: weighting must be one of"):
        run(weighting="cubic")
    with pytest.raises(ValueError, match=r"red_diff: data_term must be one of \('reference', 'likelihood'\)"):
        run(data_term="l1")
    with pytest.raises(ValueError, match=r"red_diff: init must be one of \('auto', 'pinv', 'gray'\), got 'zeros'"):
        run(init="zeros")
    noiseless = invgen.operator("identity")
    with pytest.raises(RangeError, match="data_term='likelihood' needs a likelihood"):
        run(noiseless, data_term="likelihood")
    assert bool(torch.isfinite(run(noiseless, steps=5)).all())  # the reference's data term needs no noise model


def test_no_undamped_pseudo_inverse_start_without_an_svd():
    """Regression (diffusion-cpu deblurring cells at 3.1 dB): the Fourier pseudo-inverse of a Gaussian blur turns noise
    0.05 into values of +-1e4; red_diff and pnp_dm start from gray / noise when the operator has no SVD."""
    prior = invgen.prior("gmm", image_shape=(1, 16, 16), seed=0)
    x = prior.sample(2, generator=torch.Generator().manual_seed(1)).clamp(0, 1)
    op = invgen.operator("blur", kernel="gaussian", sigma=1.5, noise=invgen.noise("gaussian", std=0.05))
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert float(op.pinv(y).abs().max()) > 1e3  # what the old start was
    for solver, options, psnr in (
        ("red_diff", {"steps": 50}, 21.8),
        ("pnp_dm", {"iterations": 5, "prior_steps": 10}, 16.0),
    ):
        post = invgen.solve(y, op, prior, solver=solver, n_samples=2, seed=0, **options)
        assert float(post.samples.abs().max()) < 1.5, solver
        assert float(invgen.metrics.psnr(post.mean.clamp(0, 1), x).mean()) == pytest.approx(psnr, abs=1.0), solver
    stuck = invgen.solve(y, op, prior, solver="red_diff", n_samples=2, seed=0, steps=50, init="pinv")
    assert float(stuck.samples.abs().max()) > 1e3  # the explicit option still does what it says
