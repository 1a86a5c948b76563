"""Latent-space solvers (latent MAP / CSGM, latent MALA, latent HMC), checked against exact Gaussian posteriors.

The analytic Gaussian prior is a generator, ``x = mu + L z`` with ``z ~ N(0, I)``, and its posterior under a linear
operator with Gaussian noise is Gaussian and known in closed form, so:

* latent MAP's ``G(z*)`` must equal the exact MAP, which for a Gaussian is the exact posterior mean (1e-3 max abs);
* latent MALA / HMC, N = 1000 chains from independent prior draws, must be as close to exact posterior samples as an
  independent exact set of the same size is: sliced Wasserstein-2 (200 directions) at most ``FLOOR_FACTOR`` (1.2)
  times the largest of 20 replicate floors, as in tests/test_solvers.py. Two more statistics check the first two
  moments, in the coordinates whitened by the exact posterior (``w = C^{-1/2} (x - m)``, N(0, I) for exact
  samples): ``sqrt(N) max_i |mean(w)_i|`` and ``||cov(w) - I||_F``, against the same rule with their own floors
  (20 exact sets);
* a wrong likelihood std is flagged by the same statistics (negative control: the test can fail).

The problems are the shared linear problems of tests/oracle.py (denoising, 50 % inpainting, block super-resolution
x2, colorization, compressed sensing m = 8 of 16), on the seeded default Gaussian prior of each image shape.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pytest
import torch
from oracle import CASES, N, directions, noise_floor, sliced_wasserstein
from oracle import gaussian as _noise
from oracle import gen as _gen

import invgen
from invgen.errors import MissingCapabilityError, RangeError, ShapeError
from invgen.solvers.latent import latent_hmc, latent_mala, latent_map

F64 = torch.float64
FLOOR_FACTOR = 1.2
MALA_STEPS = 400  # 200 adaptive burn-in steps + 200 fixed
HMC_STEPS = 60  # 30 + 30 iterations of 10 leapfrog steps: 600 gradients
MAP_ATOL = 1e-3

# Measured on this suite's seeds (CPU, float64), pinned to GOLDEN_RTOL: a change beyond it means the sampler changed.
# name: (MALA sliced W2, HMC sliced W2)
GOLDEN = {
    "identity": (0.0066, 0.0056),
    "inpaint": (0.0059, 0.0071),
    "superres": (0.0082, 0.0080),
    "colorize": (0.0064, 0.0067),
    "sensing": (0.0074, 0.0073),
}
GOLDEN_RTOL = 0.3


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def moments(x: torch.Tensor, mean: torch.Tensor, whiten: torch.Tensor) -> tuple[float, float]:
    """``(sqrt(N) max |mean(w)|, ||cov(w) - I||_F)`` of ``w = whiten (x - mean)``; x ``(N, ...)``."""
    w = (x.reshape(x.shape[0], -1).to(F64) - mean) @ whiten.T
    d = w.shape[1]
    return float(math.sqrt(w.shape[0]) * w.mean(0).abs().max()), float(
        (torch.cov(w.T) - torch.eye(d, dtype=F64)).norm()
    )


@dataclass
class Problem:
    prior: object
    op: object
    y: torch.Tensor
    post: object
    exact: torch.Tensor
    dirs: torch.Tensor
    sw_floor: float
    mean_floor: float
    cov_floor: float
    whiten: torch.Tensor

    def stats(self, samples: torch.Tensor) -> tuple[float, float, float]:
        """(sliced W2, mean statistic, covariance statistic) of ``(N, C, H, W)`` samples."""
        mean = self.post._mean64[0]
        return (sliced_wasserstein(samples, self.exact, self.dirs), *moments(samples, mean, self.whiten))


@functools.cache
def problem(name: str) -> Problem:
    shape, make, std = CASES[name]
    prior, op = invgen.prior("gaussian", image_shape=shape, seed=0), make(std)
    x = prior.sample(1, generator=_gen(0), dtype=F64).clamp(0, 1)
    y = op.measure(x, generator=_gen(6))
    post = prior.exact_posterior(op, y)
    evals, evecs = torch.linalg.eigh(post._cov64[0])
    whiten = (evecs / evals.sqrt()) @ evecs.T
    dirs = directions(prior.d, 200)
    sw = noise_floor(lambda n, g: post.sample(n, g)[:, 0], N, dirs, pairs=20)
    mom = torch.tensor([moments(post.sample(N, _gen(300 + i))[:, 0], post._mean64[0], whiten) for i in range(20)])
    exact = post.sample(N, _gen(99))[:, 0]
    return Problem(
        prior, op, y, post, exact, dirs, float(sw.max()), float(mom[:, 0].max()), float(mom[:, 1].max()), whiten
    )


# -- latent MAP is the exact MAP ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_latent_map_equals_the_exact_map(name, capsys):
    shape, make, std = CASES[name]
    prior, op = invgen.prior("gaussian", image_shape=shape, seed=0), make(std)
    x = prior.sample(2, generator=_gen(0), dtype=F64).clamp(0, 1)
    y = op.measure(x, generator=_gen(6))
    exact = prior.exact_posterior(op, y).mean  # for a Gaussian posterior, the MAP
    errors = []
    for dtype in (F64, torch.float32) if name == "sensing" else (F64,):  # sensing converges slowest
        s, extras = latent_map(prior, op, y.to(dtype), n_samples=8, generator=_gen(1))
        assert s.shape == (8, 2, *shape) and s.dtype == dtype
        assert extras["objective"].shape == (8, 2) and extras["latents"].shape == (8, 2, prior.d)
        errors.append(float((s.to(F64) - exact[None]).abs().max()))
    with capsys.disabled():
        print(f"\n[latent_map] {name:>9}: max |G(z*) - exact MAP| float64, float32: {errors}")
    assert max(errors) <= MAP_ATOL


def test_latent_map_restarts_keep_the_best_and_the_encoder_start():
    """Restarts are independent optimisations (Adam is elementwise), so R restarts of one sample are R samples of one
    restart drawn from the same random numbers: the kept objective is their minimum. The generator is non-linear
    (a sine), so the objective has several minima and restarts differ."""

    class Sine(invgen.Prior):
        name = "sine"
        capabilities = frozenset({"generator"})
        image_shape = (1, 2, 2)
        latent_shape = (2,)

        def decode(self, z):
            w = torch.tensor([[1.0, 0.5], [-0.5, 1.0], [2.0, 0.0], [0.3, -1.5]], dtype=z.dtype)
            return (0.5 + 0.4 * torch.sin(3 * z @ w.T)).reshape(-1, 1, 2, 2)

    op = invgen.operator("identity", noise=_noise(0.05))
    y = op.measure(torch.tensor([[[[0.2, 0.8], [0.6, 0.3]]], [[[0.5, 0.5], [0.9, 0.1]]]], dtype=F64), _gen(0))
    one, ex_one = latent_map(Sine(), op, y, n_samples=6, generator=_gen(2), steps=200)
    best, ex_best = latent_map(Sine(), op, y, n_samples=1, generator=_gen(2), steps=200, restarts=6)
    assert float(ex_one["objective"].std(0).min()) > 1.0, "the restarts reach different local minima"
    torch.testing.assert_close(ex_best["objective"][0], ex_one["objective"].min(0).values)
    torch.testing.assert_close(ex_one["best"], ex_one["objective"].argmin(0))
    pick = ex_one["best"]
    torch.testing.assert_close(best[0], one[pick, torch.arange(2)])
    # encoder start: the Gaussian's exact encoder; the optimum does not depend on the start
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    op = CASES["inpaint"][1](0.05)
    y = op.measure(prior.sample(1, generator=_gen(0), dtype=F64).clamp(0, 1), generator=_gen(1))
    post = invgen.solve(y, op, prior, solver="latent_map", init="encoder", n_samples=2, seed=0, steps=300)
    assert float((post.samples - prior.exact_posterior(op, y).mean).abs().max()) <= MAP_ATOL
    assert post.nfe == 300 + 1 + 1, "one decode per Adam step, one for the result, one encode"
    assert torch.equal(post.samples[0], post.samples[1]), "one start for every sample"


def test_latent_map_noiseless_and_nonlinear():
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    x = prior.sample(1, generator=_gen(0), dtype=F64).clamp(0, 1)
    # std 0: the documented fallback minimises ||y - A(G(z))||^2 / 2, so the result is consistent with the data
    op = invgen.operator("inpaint", mask="random", ratio=0.5, seed=0)
    y = op.measure(x)
    s, _ = latent_map(prior, op, y, n_samples=2, generator=_gen(1), steps=300)
    assert float((op(s.reshape(2, 1, 4, 4)) - y).abs().max()) < 1e-4
    # a nonlinear operator (sketch) and Poisson noise go through operator.log_likelihood; the objective falls
    for op in (
        invgen.operator("sketch", noise=_noise(0.1)),
        invgen.operator("identity", noise=invgen.noise("poisson", rate=100.0)),
    ):
        y = op.measure(x, generator=_gen(1))
        _, short = latent_map(prior, op, y, n_samples=2, generator=_gen(2), steps=1)
        s, long = latent_map(prior, op, y, n_samples=2, generator=_gen(2), steps=300)
        assert bool(torch.isfinite(s).all()) and bool((long["objective"] < short["objective"]).all())


# -- latent MALA and HMC are exact ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_latent_mala_and_hmc_match_the_exact_posterior(name, capsys):
    pb = problem(name)
    s_mala, ex_mala = latent_mala(pb.prior, pb.op, pb.y, n_samples=N, generator=_gen(1), steps=MALA_STEPS)
    s_hmc, ex_hmc = latent_hmc(pb.prior, pb.op, pb.y, n_samples=N, generator=_gen(1), steps=HMC_STEPS)
    assert s_mala.shape == s_hmc.shape == (N, 1, *pb.prior.image_shape)
    assert ex_mala["latents"].shape == ex_hmc["latents"].shape == (N, 1, pb.prior.d)
    mala, hmc = pb.stats(s_mala[:, 0]), pb.stats(s_hmc[:, 0])
    floors = (pb.sw_floor, pb.mean_floor, pb.cov_floor)
    with capsys.disabled():
        print(
            f"\n[latent exactness] {name:>9} | floors (max of 20): SW {floors[0]:.4f} mean {floors[1]:.2f} cov "
            f"{floors[2]:.3f} | MALA SW {mala[0]:.4f} (x{mala[0] / floors[0]:.2f}) mean {mala[1]:.2f} cov "
            f"{mala[2]:.3f} accept {ex_mala['acceptance_rate']:.3f} | HMC SW {hmc[0]:.4f} (x{hmc[0] / floors[0]:.2f}) "
            f"mean {hmc[1]:.2f} cov {hmc[2]:.3f} accept {ex_hmc['acceptance_rate']:.3f}"
        )
    for label, stats in (("latent MALA", mala), ("latent HMC", hmc)):
        for what, value, floor in zip(("sliced W2", "mean statistic", "covariance statistic"), stats, floors):
            assert value <= FLOOR_FACTOR * floor, f"{label} {what} {value:.4g} above the noise floor {floor:.4g}"
    assert abs(ex_mala["acceptance_rate"] - 0.574) < 0.03 and abs(ex_hmc["acceptance_rate"] - 0.65) < 0.04
    assert ex_mala["step_size"] > 0 and ex_hmc["step_size"] > 0
    golden = GOLDEN[name]
    assert mala[0] == pytest.approx(golden[0], rel=GOLDEN_RTOL)
    assert hmc[0] == pytest.approx(golden[1], rel=GOLDEN_RTOL)


def test_negative_control_wrong_noise_std_is_flagged(capsys):
    """Both samplers run with the likelihood std doubled: the same statistics flag them."""
    pb = problem("identity")
    wrong = CASES["identity"][1](0.2)
    s_mala, _ = latent_mala(pb.prior, wrong, pb.y, n_samples=N, generator=_gen(1), steps=MALA_STEPS)
    s_hmc, _ = latent_hmc(pb.prior, wrong, pb.y, n_samples=N, generator=_gen(1), steps=HMC_STEPS)
    mala, hmc = pb.stats(s_mala[:, 0]), pb.stats(s_hmc[:, 0])
    with capsys.disabled():
        for label, (sw, mean, cov) in (("MALA", mala), ("HMC", hmc)):
            print(
                f"\n[latent negative control] {label} std x2: SW {sw:.4f} (threshold "
                f"{FLOOR_FACTOR * pb.sw_floor:.4f}), mean {mean:.2f} ({FLOOR_FACTOR * pb.mean_floor:.2f}), cov "
                f"{cov:.3f} ({FLOOR_FACTOR * pb.cov_floor:.3f})"
            )
    for sw, _, cov in (mala, hmc):
        assert sw > 2 * FLOOR_FACTOR * pb.sw_floor
        assert cov > 2 * FLOOR_FACTOR * pb.cov_floor


def test_map_start_and_batched_observations():
    """init='map' starts the chains at the MAP, the chains still spread to the posterior; B = 2 items at once."""
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    op = CASES["sensing"][1](0.05)
    y = op.measure(prior.sample(2, generator=_gen(0), dtype=F64).clamp(0, 1), generator=_gen(1))
    post = prior.exact_posterior(op, y)
    s, _ = latent_hmc(prior, op, y, n_samples=400, generator=_gen(2), steps=40, init="map", map_steps=100)
    assert s.shape == (400, 2, 1, 4, 4)
    std = post.cov.diagonal(dim1=1, dim2=2).sqrt().reshape(2, 1, 4, 4)
    z = (s.mean(0) - post.mean) / (std / math.sqrt(400))
    assert float(z.abs().max()) < 4.5
    ratio = s.std(0) / std
    assert float(ratio.min()) > 0.85 and float(ratio.max()) < 1.15


# -- solve() integration, NFE, errors ---------------------------------------------------------------------------
def test_solve_shapes_reproducibility_and_nfe():
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("inpaint", mask="half", noise=_noise(0.1))
    y = op.measure(prior.sample(2, generator=_gen(0)).clamp(0, 1), generator=_gen(1))
    for name in ("latent_map", "latent_mala", "latent_hmc"):
        assert name in invgen.compatible_solvers(prior)
        assert invgen.registry.get("solvers", name).meta["needs"] == ("generator",)
    m = invgen.solve(y, op, prior, solver="latent_map", n_samples=3, seed=0, steps=20, restarts=2)
    assert m.samples.shape == (3, 2, 1, 4, 4) and m.nfe == 21, "one batched decode per Adam step, one at the end"
    assert m.solver == {"name": "latent_map", "steps": 20, "lr": 0.05, "restarts": 2, "init": "prior", "lam": None}
    a = invgen.solve(y, op, prior, solver="latent_mala", n_samples=5, seed=3, steps=30, step_size=0.05)
    b = invgen.solve(y, op, prior, solver="latent_mala", n_samples=5, seed=3, steps=30, step_size=0.05)
    c = invgen.solve(y, op, prior, solver="latent_mala", n_samples=5, seed=4, steps=30, step_size=0.05)
    assert a.samples.shape == (5, 2, 1, 4, 4)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.nfe == 30 + 1, "one decode per proposal, batched over chains, plus the start"
    assert 0.0 <= a.extras["acceptance_rate"] <= 1.0
    h = invgen.solve(y, op, prior, solver="latent_hmc", n_samples=5, seed=3, steps=7, leapfrog=4, step_size=0.1)
    assert h.samples.shape == (5, 2, 1, 4, 4) and h.nfe == 7 * 4 + 1
    heuristic = invgen.solve(y, op, prior, solver="latent_hmc", n_samples=5, seed=3, steps=7, leapfrog=4)
    assert 7 * 4 + 1 < heuristic.nfe <= 7 * 4 + 1 + 41, "the step heuristic costs one decode per trial"
    # the samples are the decoded final latents
    torch.testing.assert_close(
        h.samples.reshape(10, 1, 4, 4), prior.decode(h.extras["latents"].reshape(10, 16)), rtol=0, atol=1e-12
    )


def test_missing_capability_and_clear_errors():
    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.full((1, 1, 4, 4), 0.5, dtype=F64)
    gmm = invgen.prior("gmm", image_shape=(1, 4, 4), seed=0)
    for name in ("latent_map", "latent_mala", "latent_hmc"):
        with pytest.raises(MissingCapabilityError, match=rf"'{name}' needs the capability 'generator'.*'gmm'"):
            invgen.solve(y, op, gmm, solver=name)
    with pytest.raises(MissingCapabilityError, match="needs the capability 'generator'"):
        latent_mala(gmm, op, y, n_samples=2, generator=_gen(0))

    class NoEncoder(invgen.Prior):
        name = "no-encoder"
        capabilities = frozenset({"generator"})
        latent_shape = (3,)

        def decode(self, z):
            return 0.5 + 0.1 * z.sum(1).reshape(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    gauss = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    run = functools.partial(latent_map, n_samples=2, generator=_gen(0), steps=2)
    with pytest.raises(TypeError, match=r"init='encoder' needs a prior with an encoder.*'no-encoder' has none"):
        run(NoEncoder(), op, y, init="encoder")
    with pytest.raises(TypeError, match=r"init='encoder' encodes A\^\+ y and needs a linear operator"):
        run(gauss, invgen.operator("sketch", noise=_noise(0.1)), y, init="encoder")
    with pytest.raises(ShapeError, match=r"latents of shape \(1, 16\) or \(2, 1, 16\), got \(1, 15\)"):
        run(gauss, op, y, init=torch.zeros(1, 15))
    with pytest.raises(ShapeError, match=r"decodes images of shape \(1, 4, 4\), the operator needs \(1, 8, 8\)"):
        run(NoEncoder(), op, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="init must be 'prior', 'encoder', 'map' or a tensor of latents"):
        latent_hmc(gauss, op, y, n_samples=2, generator=_gen(0), init="zeros")
    with pytest.raises(ValueError, match="restarts must be an integer >= 1, got 0"):
        run(gauss, op, y, restarts=0)
    with pytest.raises(RangeError, match="lr must be finite and > 0"):
        run(gauss, op, y, lr=-1.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        latent_mala(gauss, op, y, n_samples=2, generator=_gen(0), steps=0)
    with pytest.raises(ValueError, match=r"0 <= burn_in < steps = 10, got 10"):
        latent_mala(gauss, op, y, n_samples=2, generator=_gen(0), steps=10, burn_in=10)
    with pytest.raises(RangeError, match="step_size must be finite and > 0"):
        latent_hmc(gauss, op, y, n_samples=2, generator=_gen(0), step_size=0.0)
    with pytest.raises(ValueError, match="leapfrog must be an integer >= 1"):
        latent_hmc(gauss, op, y, n_samples=2, generator=_gen(0), leapfrog=0)
    with pytest.raises(RangeError, match=r"jitter must lie in \[0, 1\)"):
        latent_hmc(gauss, op, y, n_samples=2, generator=_gen(0), jitter=1.0)
    with pytest.raises(RangeError, match=r"target_accept must lie in \(0, 1\)"):
        latent_mala(gauss, op, y, n_samples=2, generator=_gen(0), target_accept=1.0)
    for fn in (latent_mala, latent_hmc):
        with pytest.raises(RangeError, match="Gaussian noise std is 0"):
            fn(gauss, invgen.operator("identity"), y, n_samples=2, generator=_gen(0))


def test_mcmc_with_poisson_noise_and_a_nonlinear_operator():
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    x = prior.sample(1, generator=_gen(0), dtype=F64).clamp(0, 1)
    for op in (
        invgen.operator("identity", noise=invgen.noise("poisson", rate=200.0)),
        invgen.operator("sketch", noise=_noise(0.1)),
    ):
        y = op.measure(x, generator=_gen(1))
        s, ex = latent_mala(prior, op, y, n_samples=8, generator=_gen(2), steps=40)
        h, exh = latent_hmc(prior, op, y, n_samples=8, generator=_gen(2), steps=10, leapfrog=4)
        assert bool(torch.isfinite(s).all()) and bool(torch.isfinite(h).all())
        assert ex["acceptance_rate"] > 0.2 and exh["acceptance_rate"] > 0.2


def test_latent_map_steps_back_from_latents_that_decode_to_non_finite_images():
    """A generator that is finite only for |z| < 1 (as a flow's learned inverse diverges in places): Adam with a large
    step leaves that region, steps back with half the step, and ends finite near the region's edge; starting outside
    is a clear error."""

    class Ball(invgen.Prior):
        name = "ball"
        capabilities = frozenset({"generator"})
        image_shape = (1, 1, 2)
        latent_shape = (2,)

        def decode(self, z):
            inside = z.abs() < 1.0
            x = 0.5 + 0.4 * torch.where(inside, z, torch.full_like(z, math.inf))
            return x.reshape(-1, 1, 1, 2)

    op = invgen.operator("identity", noise=_noise(0.01))
    y = torch.tensor([[[[0.95, 0.1]]]], dtype=F64)  # wants z = (1.125, -1): outside, so the optimum is at the edge
    start = 0.5 * torch.rand(4, 1, 2, generator=_gen(1), dtype=F64) - 0.25  # inside, one start per sample
    s, extras = latent_map(Ball(), op, y, n_samples=4, generator=_gen(0), steps=300, lr=0.5, init=start)
    assert torch.isfinite(s).all() and torch.isfinite(extras["objective"]).all()
    z = extras["latents"]
    # every latent moved from |z| <= 0.25 to near the edge of the finite region, towards the unreachable optimum
    # (the step back halves a whole latent's step, so a coordinate stuck at the edge slows the other: measured
    # z_0 >= 0.70, z_1 <= -0.91)
    assert float(z.abs().max()) < 1.0 and float(z[..., 0].min()) > 0.6 and float(z[..., 1].max()) < -0.85
    with pytest.raises(FloatingPointError, match="starting latents"):
        latent_map(Ball(), op, y, n_samples=1, generator=_gen(0), steps=5, init=torch.full((1, 2), 2.0, dtype=F64))
