"""Baseline and Langevin solvers, checked against exact answers.

The headline is MALA's exactness: on an analytic Gaussian-mixture prior, where ``p(x | y)`` is known in closed form
for linear Gaussian problems, N MALA chains must be as close to the exact posterior as an independent exact sample
set of the same size is (the *noise floor*), by two statistics:

* the sliced Wasserstein-2 distance over 200 fixed random directions (shape and location of the posterior);
* the mixture-weight error ``max_k |mean_n p(k | x_n, y) - w_k|``, zero in expectation for exact samples, which sees
  wrong component weights that sliced distances barely see.

Rule: a statistic passes if it is at most ``FLOOR_FACTOR`` (1.2) times the largest of 20 replicate floor values
(independent exact sets). Negative controls (a wrong likelihood std, a shifted prior, wrong weights) must be flagged
by the same rule, which proves the test can fail. ULA is measured in the same table with a looser bound.

Mixing: all chains start at the same point, ``0.5 + A^+ (y - A 0.5)`` (the default ``init="fill"``), so the
component weights must be reached by moving between components. The test mixture's components overlap (Mahalanobis
distances 2.7 to 3.1 between their means, under the average covariance), so their posteriors overlap and chains do
move between them: wrong weights would show in the weight error, and MALA's measured weight errors sit inside the
floor.
"""

from __future__ import annotations

import functools

import pytest
import torch
from oracle import CASES, N, problem
from oracle import DenseOperator as Dense
from oracle import gaussian as _noise
from oracle import gen as _gen
from skimage.restoration import denoise_tv_chambolle

import invgen
from invgen.errors import MissingCapabilityError, RangeError
from invgen.solvers.langevin import mala, ula
from invgen.solvers.pinv import pinv
from invgen.solvers.tikhonov import tikhonov
from invgen.solvers.tv import grad, grad_adjoint, objective, tv, tv_norm
from invgen_plugins.analytic.gaussian import Gaussian
from invgen_plugins.analytic.gmm import GMM
from invgen_plugins.analytic.posterior import GMMPosterior

F64 = torch.float64
STEPS = 600  # MALA: 300 adaptive burn-in steps + 300 fixed; ULA: 600 steps
FLOOR_FACTOR = 1.2
ULA_FACTOR = 3.0  # ULA's bias bound, in floor maxima (MALA's is FLOOR_FACTOR)

# Measured on this suite's seeds (CPU, float64); a change beyond the tolerance means the sampler changed.
# name: (MALA sliced W2, MALA weight error, ULA sliced W2 from the default start, ULA weight error, ULA sliced W2
# started at exact samples). Sliced W2 values are pinned to GOLDEN_RTOL, weight errors to GOLDEN_WEIGHT_ATOL.
GOLDEN = {
    "identity": (0.0053, 0.0089, 0.0062, 0.0242, 0.0062),
    "inpaint": (0.0055, 0.0017, 0.0057, 0.0130, 0.0056),
    "superres": (0.0073, 0.0076, 0.0075, 0.0120, 0.0075),
    "colorize": (0.0068, 0.0173, 0.0074, 0.0426, 0.0074),
    "sensing": (0.0065, 0.0023, 0.0071, 0.0430, 0.0060),
}
GOLDEN_WEIGHT_ATOL = 0.01
GOLDEN_RTOL = 0.3


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared machine spinning threads slow them 50x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _row(*cells) -> str:
    return " | ".join(f"{c:>9.4f}" if isinstance(c, float) else f"{c!s:>9}" for c in cells)


# -- the headline: MALA is exact, ULA's bias is measured ------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_mala_matches_the_exact_posterior_and_ula_bias_is_bounded(name, capsys):
    pb = problem(name)
    samples, extras = mala(pb.prior, pb.op, pb.y, n_samples=N, generator=_gen(1), steps=STEPS)
    assert samples.shape == (N, 1, *pb.prior.image_shape)
    sw, we = pb.stats(samples[:, 0])
    ula_fill = ula(pb.prior, pb.op, pb.y, n_samples=N, generator=_gen(1), steps=STEPS)[0][:, 0]
    ula_exact = ula(
        pb.prior, pb.op, pb.y, n_samples=N, generator=_gen(1), steps=STEPS, init=pb.post.sample(N, _gen(7))
    )[0][:, 0]
    sw_ula, we_ula = pb.stats(ula_fill)
    sw_ula_x, _ = pb.stats(ula_exact)
    floor_sw, floor_we = float(pb.sw_floor.max()), float(pb.we_floor.max())
    with capsys.disabled():
        print(
            f"\n[exactness] {name:>9} | w_post {[round(w, 3) for w in pb.post.weights[0].tolist()]} | SW floor "
            f"med/max {float(pb.sw_floor.median()):.4f}/{floor_sw:.4f} | MALA SW {sw:.4f} (x{sw / floor_sw:.2f}) "
            f"weight err {we:.4f} (floor max {floor_we:.4f}) accept {extras['acceptance_rate']:.3f} | ULA SW "
            f"{sw_ula:.4f} (x{sw_ula / floor_sw:.2f}), from exact {sw_ula_x:.4f} (x{sw_ula_x / floor_sw:.2f}), "
            f"weight err {we_ula:.4f}"
        )
    assert sw <= FLOOR_FACTOR * floor_sw, f"MALA sliced W2 {sw:.4g} above the noise floor {floor_sw:.4g}"
    assert we <= FLOOR_FACTOR * floor_we, f"MALA weight error {we:.4g} above the noise floor {floor_we:.4g}"
    assert 0.45 <= extras["acceptance_rate"] <= 0.70
    assert extras["step_size"] > 0
    # ULA is approximate: its bias (from the default start, and started at exact samples) stays within a looser bound
    assert max(sw_ula, sw_ula_x) <= ULA_FACTOR * floor_sw
    assert we_ula <= ULA_FACTOR * floor_we
    golden = GOLDEN[name]
    assert sw == pytest.approx(golden[0], rel=GOLDEN_RTOL)
    assert we == pytest.approx(golden[1], abs=GOLDEN_WEIGHT_ATOL)
    assert sw_ula == pytest.approx(golden[2], rel=GOLDEN_RTOL)
    assert we_ula == pytest.approx(golden[3], abs=GOLDEN_WEIGHT_ATOL)
    assert sw_ula_x == pytest.approx(golden[4], rel=GOLDEN_RTOL)


def test_negative_controls_are_flagged(capsys):
    """The same statistics flag wrong samplers: the test can fail."""
    pb = problem("identity")
    floor_sw, floor_we = FLOOR_FACTOR * float(pb.sw_floor.max()), FLOOR_FACTOR * float(pb.we_floor.max())
    # 1. MALA run with the likelihood std doubled
    wrong_op = CASES["identity"][1](0.2)
    s_std = mala(pb.prior, wrong_op, pb.y, n_samples=N, generator=_gen(1), steps=STEPS)[0][:, 0]
    # 2. MALA on a prior whose means are shifted by 0.05
    shifted = GMM(pb.prior.weights, pb.prior.means.reshape(3, 1, 4, 4) + 0.05, pb.prior.covs)
    s_shift = mala(shifted, pb.op, pb.y, n_samples=N, generator=_gen(1), steps=STEPS)[0][:, 0]
    # 3. exact component posteriors mixed with uniform weights
    p = pb.post
    uniform = GMMPosterior(
        p.mean,
        p.cov,
        p.weights,
        p.component_means,
        p.component_covs,
        torch.full_like(p._w64, 1 / 3),
        p._means64,
        p._covs64,
    )
    s_uniform = uniform.sample(N, _gen(3))[:, 0]
    stats = {k: pb.stats(v) for k, v in (("std x2", s_std), ("mean +0.05", s_shift), ("uniform w", s_uniform))}
    with capsys.disabled():
        for k, (sw, we) in stats.items():
            print(
                f"\n[negative control] {k:>10}: SW {sw:.4f} (threshold {floor_sw:.4f}), weight err {we:.4f} "
                f"(threshold {floor_we:.4f})"
            )
    assert stats["std x2"][0] > 2 * floor_sw
    assert stats["mean +0.05"][0] > floor_sw
    assert stats["uniform w"][1] > 2 * floor_we


# -- solve() integration ------------------------------------------------------------------------------------------
def test_solve_mala_shapes_reproducibility_nfe_and_extras():
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(prior.sample(2, generator=_gen(0)).clamp(0, 1), generator=_gen(1))
    a = invgen.solve(y, op, prior, solver="mala", n_samples=5, seed=3, steps=40)
    b = invgen.solve(y, op, prior, solver="mala", n_samples=5, seed=3, steps=40)
    c = invgen.solve(y, op, prior, solver="mala", n_samples=5, seed=4, steps=40)
    assert a.samples.shape == (5, 2, 1, 4, 4)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.nfe == 2 * 40 + 2, "score and log_prob once per step, batched over chains, plus the start"
    assert 0.0 <= a.extras["acceptance_rate"] <= 1.0 and a.extras["step_size"] > 0
    assert a.solver["name"] == "mala" and a.solver["steps"] == 40
    u = invgen.solve(y, op, prior, solver="ula", n_samples=3, seed=3, steps=30)
    assert u.samples.shape == (3, 2, 1, 4, 4) and u.nfe == 30
    gauss = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    g = invgen.solve(y, op, gauss, solver="ula", n_samples=3, seed=3, steps=10, init="prior")
    assert g.nfe == 11, "init='prior' decodes once (counted) for a generator prior"
    m = invgen.solve(y, op, prior, solver="mala", n_samples=3, seed=3, steps=10, init="prior")  # GMM.sample
    assert bool(torch.isfinite(m.samples).all())


def test_missing_capability_names_it_and_lists_usable_solvers():
    class DenoiserOnly(invgen.Prior):
        name = "denoiser-only"
        capabilities = frozenset({"denoiser"})

    class ScoreOnly(invgen.Prior):
        name = "score-only"
        capabilities = frozenset({"score"})

        def score(self, x, sigma=0.0):
            return -(x - 0.5)

    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5)
    with pytest.raises(
        MissingCapabilityError,
        match=r"'ula' needs the capability 'score'.*'denoiser-only'.*"
        r"solvers that work with it: .*pinv.*tikhonov.*tv",
    ):
        invgen.solve(y, op, DenoiserOnly(), solver="ula")
    with pytest.raises(
        MissingCapabilityError,
        match=r"'mala' needs the capability 'log_density'.*"
        r"solvers that work with it: .*ula",
    ):
        invgen.solve(y, op, ScoreOnly(), solver="mala")
    assert invgen.solve(y, op, ScoreOnly(), solver="ula", steps=5, n_samples=2).samples.shape == (2, 1, 1, 4, 4)


def test_default_start_is_the_data_solution_nearest_mid_grey():
    """init="fill": observed pixels from y, holes at 0.5 (A^+ y alone would put them at 0)."""
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(torch.full((1, 1, 4, 4), 0.9), generator=_gen(0))
    tiny = 1e-30  # one ULA step of negligible size returns the start
    s, _ = ula(
        invgen.prior("gmm", image_shape=(1, 4, 4), seed=0),
        op,
        y,
        n_samples=2,
        generator=_gen(0),
        steps=1,
        step_size=tiny,
    )
    mask = op(torch.ones(1, 1, 4, 4)).bool()
    torch.testing.assert_close(s[0][mask], y[mask])
    torch.testing.assert_close(s[1][~mask], torch.full_like(s[1][~mask], 0.5))


def test_langevin_option_validation():
    prior = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5)
    run = functools.partial(mala, prior, op, y, n_samples=2, generator=_gen(0))
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        run(steps=0)
    with pytest.raises(RangeError, match=r"step_size must be finite and > 0, got -0\.1"):
        run(step_size=-0.1)
    with pytest.raises(ValueError, match=r"0 <= burn_in < steps = 10, got 10"):
        run(steps=10, burn_in=10)
    with pytest.raises(RangeError, match=r"target_accept must lie in \(0, 1\)"):
        run(target_accept=1.5)
    with pytest.raises(ValueError, match="init must be 'fill', 'pinv', 'prior' or a tensor, got 'zeros'"):
        run(init="zeros")
    with pytest.raises(RangeError, match="sigma must be finite and >= 0"):
        ula(prior, op, y, n_samples=2, generator=_gen(0), sigma=-1.0)
    with pytest.raises(RangeError, match="Gaussian noise std is 0"):
        ula(prior, invgen.operator("identity"), y, n_samples=2, generator=_gen(0))
    with pytest.raises(TypeError, match="init='pinv' needs a linear operator"):
        ula(prior, invgen.operator("sketch", noise=_noise(0.1)), y, n_samples=2, generator=_gen(0), init="pinv")


def test_langevin_on_nonlinear_operator_and_poisson_noise():
    """Autograd likelihood gradients: the sketch operator (nonlinear) and Poisson noise run and stay finite."""
    prior = invgen.prior("gaussian", image_shape=(1, 8, 8), seed=0)
    sketch = invgen.operator("sketch", noise=_noise(0.1))
    x = prior.sample(1, generator=_gen(0), dtype=F64).clamp(0, 1)
    y = sketch.measure(x, generator=_gen(1))
    s, extras = ula(prior, sketch, y, n_samples=2, generator=_gen(2), steps=20, init=x)
    assert s.shape == (2, 1, 1, 8, 8) and bool(torch.isfinite(s).all()) and extras["step_size"] > 0
    # the default start (mid-grey) is flat, where the sketch's Jacobian vanishes: no default step is guessed (it was
    # 5e8, and the chains exploded to 1e54 while staying "finite")
    with pytest.raises(RangeError, match=r"ula: no default step_size.*'sketch'.*pass step_size"):
        ula(prior, sketch, y, n_samples=2, generator=_gen(2), steps=5)
    s, _ = ula(prior, sketch, y, n_samples=2, generator=_gen(2), steps=5, step_size=1e-4)  # mid-grey, a given step
    assert bool(torch.isfinite(s).all()) and float(s.abs().max()) < 2
    poisson = invgen.operator("identity", noise=invgen.noise("poisson", rate=200.0))
    y = poisson.measure(x, generator=_gen(1))
    s, extras = mala(prior, poisson, y, n_samples=4, generator=_gen(2), steps=40, init=x)
    assert bool(torch.isfinite(s).all()) and extras["acceptance_rate"] > 0.2


# -- baselines ------------------------------------------------------------------------------------------------------
def test_pinv_repeats_the_pseudo_inverse():
    op = invgen.operator("superres", scale=2, noise=_noise(0.05))
    y = op.measure(torch.rand(2, 1, 8, 8, generator=_gen(0)), generator=_gen(1))
    s = pinv(None, op, y, n_samples=3, generator=_gen(0))
    assert s.shape == (3, 2, 1, 8, 8)
    for i in range(3):
        torch.testing.assert_close(s[i], op.pinv(y))
    with pytest.raises(TypeError, match="needs a linear operator"):
        pinv(None, invgen.operator("sketch"), torch.zeros(1, 1, 8, 8), n_samples=1, generator=_gen(0))


@pytest.mark.parametrize("name", ["inpaint", "superres", "sensing", "dense-cg"])
def test_tikhonov_equals_the_exact_gaussian_posterior_mean(name):
    m, t = 0.4, 0.3
    if name == "dense-cg":
        op = Dense(torch.randn(10, 16, generator=_gen(3), dtype=F64) / 4, (1, 4, 4), noise=_noise(0.05))
    else:
        op = {
            "inpaint": invgen.operator("inpaint", mask="random", ratio=0.6, seed=2, noise=_noise(0.05)),
            "superres": invgen.operator("superres", scale=2, noise=_noise(0.05)),
            "sensing": invgen.operator("sensing", m=7, seed=2, noise=_noise(0.05)),
        }[name]
    x = torch.rand(2, 1, 4, 4, generator=_gen(4), dtype=F64)
    y = op.measure(x, generator=_gen(5))
    prior = Gaussian(torch.full((1, 4, 4), m, dtype=F64), t**2 * torch.eye(16, dtype=F64))
    s = tikhonov(None, op, y, n_samples=2, generator=_gen(0), prior_mean=m, prior_std=t)
    assert s.shape == (2, 2, 1, 4, 4)
    torch.testing.assert_close(s[0], prior.exact_posterior(op, y).mean, rtol=0, atol=1e-6)


def test_tikhonov_noiseless_limit_and_errors():
    op = invgen.operator("superres", scale=2)  # std 0
    y = op.measure(torch.rand(1, 1, 4, 4, generator=_gen(0), dtype=F64))
    s = tikhonov(None, op, y, n_samples=1, generator=_gen(0), prior_mean=0.3)
    prior = Gaussian(torch.full((1, 4, 4), 0.3, dtype=F64), 0.0625 * torch.eye(16, dtype=F64))
    torch.testing.assert_close(s[0], prior.exact_posterior(op, y).mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(op(s[0]), y)
    with pytest.raises(RangeError, match="prior_std must be finite and > 0"):
        tikhonov(None, op, y, n_samples=1, generator=_gen(0), prior_std=0.0)
    post = invgen.solve(y, op, solver="tikhonov", n_samples=2)
    assert post.samples.shape == (2, 1, 1, 4, 4) and post.nfe == 0


def test_tv_operators_match_their_adjoint_and_norm():
    x = torch.randn(2, 3, 5, 6, dtype=F64)
    p = torch.randn(2, 2, 3, 5, 6, dtype=F64)
    assert float((grad(x) * p).sum()) == pytest.approx(float((x * grad_adjoint(p)).sum()), rel=1e-12)
    ramp = torch.arange(6, dtype=F64).expand(1, 1, 5, 6)  # TV of a ramp: (W - 1) per row
    assert float(tv_norm(ramp)[0]) == pytest.approx(5 * 5)


@pytest.mark.parametrize("channels", [1, 3])
def test_tv_denoising_matches_skimage_chambolle(channels, capsys):
    """skimage's ROF objective (weight = lam, forward differences, Neumann boundary), solved at least as well."""
    g = _gen(channels)
    x = torch.full((1, channels, 24, 24), 0.2, dtype=F64)
    x[..., 6:18, 4:14] = 0.8
    x[..., 2:9, 12:22] = 0.5
    op = invgen.operator("identity", noise=_noise(0.1))
    y = op.measure(x, generator=g).clamp(0, 1)  # in [0, 1], so the box constraint is inactive at the optimum
    lam = 0.1
    ours, extras = tv(None, op, y, n_samples=1, generator=g, lam=lam, iters=300)
    f = y[0].permute(1, 2, 0).numpy()
    axis = -1 if channels == 3 else None
    sk_default = denoise_tv_chambolle(f[..., 0] if channels == 1 else f, weight=lam, channel_axis=axis)
    sk_conv = denoise_tv_chambolle(
        f[..., 0] if channels == 1 else f, weight=lam, eps=1e-10, max_num_iter=5000, channel_axis=axis
    )

    def back(a):
        t = torch.from_numpy(a)
        return (t[None, None] if channels == 1 else t.permute(2, 0, 1)[None]).to(F64)

    obj = float(objective(op, y, ours[0], lam)[0])
    obj_default = float(objective(op, y, back(sk_default), lam)[0])
    obj_conv = float(objective(op, y, back(sk_conv), lam)[0])
    diff = float((ours[0] - back(sk_conv)).abs().max())
    with capsys.disabled():
        print(
            f"\n[tv vs skimage] C={channels}: objective ours {obj:.6f} ({extras['iterations']} it), skimage default "
            f"{obj_default:.6f}, skimage converged {obj_conv:.6f}; max |ours - skimage converged| {diff:.2e}"
        )
    assert obj <= obj_default
    assert obj <= obj_conv * (1 + 1e-3)
    assert diff < 5e-3


@pytest.mark.parametrize("task", ["blur", "inpaint"])
def test_tv_beats_pinv_on_a_piecewise_constant_image(task):
    x = torch.full((2, 1, 32, 32), 0.25, dtype=F64)
    x[:, :, 8:24, 6:20] = 0.75
    x[1, :, 3:12, 18:30] = 0.5
    op = {
        "blur": invgen.operator("blur", kernel="gaussian", sigma=1.0, noise=_noise(0.02)),
        "inpaint": invgen.operator("inpaint", mask="random", ratio=0.5, seed=1, noise=_noise(0.05)),
    }[task]
    y = op.measure(x, generator=_gen(0))

    def psnr(a):
        return float((-10 * torch.log10(((a - x) ** 2).mean((1, 2, 3)))).min())

    post = invgen.solve(y, op, solver="tv", n_samples=1)
    assert post.extras["lam"] == pytest.approx(0.6 * op.noise.std)
    rec = post.samples[0]
    assert float(rec.min()) >= 0 and float(rec.max()) <= 1
    assert psnr(rec) > psnr(op.pinv(y).clamp(0, 1)) + 3


def test_tv_mean_start_fills_large_holes_and_reaches_the_same_optimum():
    """Inpainting a 16x16 hole: from the mean-filled start TV is far ahead of the pinv start (zeros) after 100
    iterations, both solve A x = y at the observed pixels, and run to convergence they agree (one convex optimum)."""
    from invgen.solvers.tv import objective, start

    x = torch.full((1, 1, 32, 32), 0.6, dtype=F64)
    x[..., 16:, :] = 0.3
    mask = torch.ones(32, 32, dtype=F64)
    mask[8:24, 8:24] = 0
    op = invgen.operator("inpaint", mask=mask, noise=_noise(0.01))
    y = op.measure(x, generator=_gen(0))
    x0 = start(op, y, tuple(x.shape), "mean")
    observed_mean = float((y * mask).sum() / mask.sum())
    assert torch.allclose(x0[..., 10, 10], torch.tensor(observed_mean, dtype=F64))  # a hole pixel
    assert torch.allclose(x0 * mask, op.pinv(y) * mask)  # observed pixels kept
    objs = {}
    for init in ("pinv", "mean"):
        _out, extras = tv(None, op, y, n_samples=1, generator=_gen(0), iters=100, tol=0.0, init=init)
        objs[init] = extras["objective"][0]
    assert objs["mean"] < 0.7 * objs["pinv"], objs
    runs = [tv(None, op, y, n_samples=1, generator=_gen(0), iters=20000, tol=1e-9, init=i)[0] for i in ("pinv", "mean")]
    assert float((runs[0] - runs[1]).abs().max()) < 2e-3
    assert float(objective(op, y, runs[1][0], 0.6 * 0.01)) == pytest.approx(
        float(objective(op, y, runs[0][0], 0.6 * 0.01)), rel=1e-4
    )
    with pytest.raises(ValueError, match="init must be 'mean' or 'pinv'"):
        tv(None, op, y, n_samples=1, generator=_gen(0), init="zeros")


def test_tv_errors():
    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.zeros(1, 1, 4, 4)
    with pytest.raises(RangeError, match="lam must be finite and >= 0"):
        tv(None, op, y, n_samples=1, generator=_gen(0), lam=-1.0)
    with pytest.raises(RangeError, match="bounds must be"):
        tv(None, op, y, n_samples=1, generator=_gen(0), bounds=(1.0, 0.0))
    with pytest.raises(TypeError, match="no default lam for 'poisson'"):
        tv(None, invgen.operator("identity", noise=invgen.noise("poisson")), y, n_samples=1, generator=_gen(0))
