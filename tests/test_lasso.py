"""Lasso baseline (FISTA): the closed form for A = I, the optimality (KKT) conditions for compressed sensing, the box
constraint, and clear errors. Also CSGM's weighted objective of ``latent_map`` (``lam``), which on the analytic
Gaussian generator is the exact MAP of the problem whose noise variance is ``lam``."""

from __future__ import annotations

import pytest
import torch
from oracle import gaussian as _noise
from oracle import gen as _gen

import invgen
from invgen.errors import RangeError
from invgen.solvers.lasso import lasso, objective
from invgen.solvers.latent import latent_map

F64 = torch.float64


def test_identity_operator_gives_soft_thresholding():
    op = invgen.operator("identity", noise=_noise(0.1))
    y = torch.randn(3, 1, 6, 6, generator=_gen(0), dtype=F64)
    x, extras = lasso(None, op, y, n_samples=2, generator=_gen(1), lam=0.3, clip=False)
    exact = torch.sign(y) * (y.abs() - 0.3).clamp_min(0)
    assert x.shape == (2, 3, 1, 6, 6)
    torch.testing.assert_close(x[0], exact, atol=1e-7, rtol=0)
    assert extras["lam"] == 0.3 and extras["iterations"] < 100  # the step is 1 / (1.02 ||A||^2): fast, not one step


@pytest.mark.parametrize("lam", [0.01, 0.1])
def test_sensing_solution_meets_the_kkt_conditions(lam):
    """``g = A^T (y - A x)`` must equal ``lam sign(x_i)`` on the support and lie in ``[-lam, lam]`` off it."""
    op = invgen.operator("sensing", m=40, seed=3, noise=_noise(0.01))
    x0 = torch.zeros(2, 1, 8, 8, dtype=F64)
    x0[:, :, 2:5, 3:5] = 0.8  # sparse in pixels
    y = op.measure(x0, generator=_gen(2))
    x, extras = lasso(None, op, y, n_samples=1, generator=_gen(0), lam=lam, iters=20000, tol=1e-12, clip=False)
    x = x[0]
    g = op.adjoint(y - op(x))
    on = x.abs() > 1e-8
    assert bool(on.any()) and bool((~on).any())
    assert float((g[on] - lam * torch.sign(x[on])).abs().max()) <= 1e-6 * max(1.0, 1 / lam)
    assert float(g[~on].abs().max()) <= lam * (1 + 1e-6)
    # an optimum: no random perturbation lowers the objective
    base = objective(op, y, x, lam)
    for i in range(20):
        d = 1e-3 * torch.randn(x.shape, generator=_gen(10 + i), dtype=F64)
        assert bool((objective(op, y, x + d, lam) >= base - 1e-12).all())
    assert extras["objective"] == pytest.approx(base.tolist(), rel=1e-12)


def test_box_constraint_and_clipping():
    op = invgen.operator("sensing", m=30, seed=1, noise=_noise(0.05))
    x0 = torch.zeros(1, 1, 8, 8, dtype=F64)
    x0[..., 1:7, 3:5] = 1.0
    y = op.measure(x0, generator=_gen(4))
    free, _ = lasso(None, op, y, n_samples=1, generator=_gen(0), lam=0.01, clip=False, iters=5000)
    boxed, ex = lasso(None, op, y, n_samples=1, generator=_gen(0), lam=0.01, bounds=(0, 1), clip=False, iters=5000)
    clipped, _ = lasso(None, op, y, n_samples=1, generator=_gen(0), lam=0.01, iters=5000)
    assert float(free.min()) < -0.01 or float(free.max()) > 1.01, "the plain Lasso leaves the box here"
    assert float(boxed.min()) >= 0 and float(boxed.max()) <= 1
    torch.testing.assert_close(clipped, free.clamp(0, 1))
    # the box-constrained optimum beats the clipped plain one on the objective (both feasible)
    assert float(objective(op, y, boxed[0], 0.01)) <= float(objective(op, y, clipped[0], 0.01)) + 1e-9
    assert float(objective(op, y, boxed[0], 0.01)) == pytest.approx(ex["objective"][0], rel=1e-12)


def test_through_the_registry_and_errors():
    op = invgen.operator("inpaint", mask="random", ratio=0.5, seed=0, noise=_noise(0.05))
    x = torch.rand(2, 1, 8, 8, generator=_gen(0))
    post = invgen.solve(op.measure(x, generator=_gen(1)), op, solver="lasso", n_samples=3, lam=0.05)
    assert post.samples.shape == (3, 2, 1, 8, 8) and "lasso" in invgen.list_solvers()
    assert float(post.samples.min()) >= 0 and float(post.samples.max()) <= 1
    y = op.measure(x, generator=_gen(1))
    with pytest.raises(RangeError, match="lam"):
        lasso(None, op, y, n_samples=1, generator=_gen(0), lam=-1.0)
    with pytest.raises(RangeError, match="bounds"):
        lasso(None, op, y, n_samples=1, generator=_gen(0), bounds=(1, 0))
    sketch = invgen.operator("sketch", noise=_noise(0.05))
    with pytest.raises(TypeError, match="linear"):
        lasso(None, sketch, torch.zeros(1, 1, 8, 8), n_samples=1, generator=_gen(0))


@pytest.mark.parametrize("lam", [0.01, 0.09])
def test_latent_map_lam_is_the_map_of_the_problem_with_noise_variance_lam(lam):
    """``||y - A G(z)||^2 + lam ||z||^2`` = ``2 lam U(z)`` of the problem with noise std ``sqrt(lam)``: on the
    Gaussian generator its minimiser is that problem's exact MAP (posterior mean), whatever the operator's own std."""
    prior = invgen.prior("gaussian", image_shape=(1, 4, 4), seed=0)
    op = invgen.operator("sensing", m=8, seed=0, noise=_noise(0.05))
    twin = invgen.operator("sensing", m=8, seed=0, shape=(1, 4, 4), noise=_noise(lam**0.5))
    y = op.measure(prior.sample(2, generator=_gen(0), dtype=F64).clamp(0, 1), generator=_gen(6))
    s, _ = latent_map(prior, op, y, n_samples=2, generator=_gen(1), lam=lam, steps=2000)
    exact = prior.exact_posterior(twin, y).mean
    assert float((s - exact[None]).abs().max()) <= 1e-3
    other = prior.exact_posterior(op, y).mean  # and not the MAP of the operator's own noise
    assert float((exact - other).abs().max()) > 0.01
    with pytest.raises(RangeError, match="lam"):
        latent_map(prior, op, y, n_samples=1, generator=_gen(1), lam=-0.1)
    poisson = invgen.operator("identity", noise=invgen.noise("poisson", rate=50.0))
    with pytest.raises(TypeError, match="Gaussian"):
        latent_map(prior, poisson, torch.ones(1, 1, 4, 4), n_samples=1, generator=_gen(1), lam=0.1)
