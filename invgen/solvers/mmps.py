"""MMPS: moment-matching posterior sampling (Rozet, Andry, Lanusse & Louppe, "Learning Diffusion Priors from
Observations by Expectation Maximization", NeurIPS 2024).

MMPS approximates ``p(x0 | x_s)`` by the Gaussian with Tweedie's first two moments, the denoiser's mean ``D =
D(x_s, s)`` and the covariance ``V = Cov[x0 | x_s] = s^2 dD/dx_s`` (VE form), which it only touches through
vector-Jacobian products. For ``y = A x0 + sigma_y n`` (``A`` linear) the noisy likelihood is then ``p(y | x_s) ~
N(A D, sigma_y^2 I + A V A^T)`` and the posterior denoiser ``E[x0 | x_s, y]`` under this approximation is

    D_y = D + V A^T u,   u = (sigma_y^2 I + A V A^T)^{-1} (y - A D).

One step from ``s_i`` to ``s_{i+1}``, on ``N * B`` stacked chains (:func:`posterior_denoise`):

    D   = D(x, s_i)                                         (with autograd: one forward pass)
    u   = CG_k(v -> sigma_y^2 v + A(s_i^2 J^T (A^T v)), y - A D)   (k = linear_iters, one vjp per iteration)
    D_y = D + s_i^2 J^T (A^T u)                             (one more vjp)
    x  <- ddim_step(x, D_y, s_i, s_{i+1}, eta, n)

``J = dD/dx_s``; a vjp gives ``J^T w``, so ``V = s^2 J`` is applied as ``s^2 J^T``. For an exact Tweedie denoiser
``J = Cov[x0 | x_s] / s^2`` is symmetric, so ``J^T = J`` and nothing is approximated beyond the Gaussian ``p(x0 |
x_s)``: for a Gaussian prior ``D_y`` is then the exact ``E[x0 | x_s, y]`` once CG has converged. For a learned
denoiser ``J^T`` is what autograd gives cheaply (the paper and azula do the same). ``A`` and ``A^T`` are
``operator.forward`` and ``operator.adjoint``: any linear operator works, with or without an SVD.

The linear solve runs per chain on the flattened observation, from ``u = 0``, for at most ``linear_iters``
iterations (a chain stops early once its residual is at rounding level). ``sigma_y^2 I + A V A^T`` is symmetric
positive definite for an exact denoiser and ``sigma_y > 0``. With ``sigma_y = 0`` (allowed) it must stay positive
definite on the directions CG meets: a direction of non-positive curvature ``p^T M p`` raises a
:class:`~invgen.errors.RangeError` (``A V A^T`` singular there, or a Jacobian that is not a covariance). With
``sigma_y > 0`` a direction along which ``A V A^T`` is negative (``p^T M p < sigma_y^2 |p|^2``, impossible for an
exact denoiser) stops that chain's CG at its current iterate, the safeguard of truncated CG; the fraction of such
stops is returned as ``extras["cg_stopped"]``.

Learned denoisers. The Jacobian of a learned denoiser at high noise is far from a covariance (``s^2 J^T`` with ``s``
near 78 is large, non-symmetric and indefinite). Measured with ``diffusion-mnist`` (8 test digits, noise std 0.05,
50 steps, N = 2; PSNR of the samples): super-resolution x4, CG with 1 iteration 18.2 dB (negative curvature met in
0 to 15 % of the steps), with 5 iterations divergence (``|D_y - D|`` about 1e4 at the first step, where no curvature
test fails: CG's recurrences assume a symmetric ``M``); GMRES 17.3 dB (1 iteration) and 17.9 dB (5); CG with
``clip=True`` 18.3 dB (1) and 18.1 dB (5). Random inpainting: CG 24.9 dB (1), divergence (5); GMRES 21.7 (1), 23.8
(5). Hence: the default (CG, 1 iteration) runs as is; for more iterations with a learned denoiser use ``clip=True``
(the benchmark's ``clip_denoised``: ``D`` clamped to [0, 1] inside the graph, so clamped pixels carry no covariance)
or ``linear_solver="gmres"`` (azula's default: it minimises the true residual, any ``M``). ``sigma_y = 0`` with a
learned denoiser raises at the first steps; give the operator a small noise std.

Scale. The paper works on its data's own scale; the map ``x' = 2 x - 1`` to [-1, 1] images (``sigma' = 2 sigma``,
``sigma_y' = 2 sigma_y``, ``V' = 4 V``) multiplies the system by 4 and ``u`` by 1/4 and leaves ``D_y`` (mapped back)
unchanged, so the algorithm runs unchanged on our [0, 1] states.

Sampler and defaults. The reverse process is the DDIM step with ``eta`` on the prior's schedule (``prior_sigmas``,
``steps`` evenly spaced timesteps, then 0), started from the VE image of a VP ``x_T ~ N(0, I)``
(:func:`invgen.solvers.ddpm.start`). ``eta = 1`` is DDPM's ancestral step, the paper's sampler (its code's ``DDPM``
class; its image-restoration benchmark, Appendix E, runs guided-diffusion's DDIM with ``eta = 1``). ``steps = 100``
and ``linear_iters = 1`` are that benchmark's defaults (mmps-benchmark ``run.py``: ``--steps 100 --maxiter 1``; it
reports 10, 100 and 1000 steps with 1 and 5 iterations); the paper's EM experiments use 256 (CIFAR-10) and 64
(fastMRI) steps with 1 and 3 CG iterations, and azula's ``MMPSDenoiser`` defaults to 1 iteration. We take the
image-restoration setting because invgen's tasks are image restoration. On the exact-posterior oracle the 100 steps
cost accuracy (1.4x to 2.7x the SW noise floor; 1000 steps with converged solves reach the floor, see the tests).

NFE. ``invgen.solve`` counts ``prior.denoise`` calls: ``steps``, one batched call per step. Each call is then
differentiated up to ``linear_iters + 1`` times (vector-Jacobian products through the same graph, which the NFE does
not count): per step one forward and ``linear_iters + 1`` backward passes, about ``1 + 2 (linear_iters + 1)``
forward-pass costs (5 at the default), against 3 for DPS or PiGDM (one forward, one backward).

What differs from the reference code:

* CG by default: the paper's code (``priors/diffusion.py``, ``jax.scipy.sparse.linalg.cg``) uses CG; azula's
  ``MMPSDenoiser`` and the mmps-benchmark default to GMRES (here ``linear_solver="gmres"``). On a symmetric
  positive-definite system both converge to the same ``u``, but truncated iterates differ (one CG iteration steps by
  ``r^T r / r^T M r`` along the residual, one GMRES iteration by ``r^T M r / |M r|^2``);
* the curvature test and the early stop at rounding level (azula clamps ``p^T M p`` from below, which with a learned
  denoiser gives enormous steps, and always runs every iteration);
* the schedule is invgen's VP schedule mapped to VE (``sigma`` from about 78 to 0.005 for the default 1000-step
  linear-beta schedule), not the paper's log-linear VE schedule (1e-3 to 1e2); the last step returns ``D_y`` at the
  smallest level (the paper's code ends with one extra guided denoising at ``sigma_min``);
* ``A^T`` is ``operator.adjoint`` (the reference code transposes ``A`` by autograd and would linearise a nonlinear
  ``A``; nonlinear operators are refused here);
* no clipping by default (the benchmark's guided-diffusion sampler clips its denoised estimate to [-1, 1]; here
  ``clip=True``); the benchmark adds the correction to the state after an unconditional DDIM step, scaled by the
  step's coefficient of ``x0``, which is the same update as the DDIM step on ``D_y`` used here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.solvers.base import check_steps, check_unit, linear_gaussian_std, stack_batch, unstack_batch
from invgen.solvers.ddim import ddim_step
from invgen.solvers.ddpm import schedule, start

LINEAR_SOLVERS = ("cg", "gmres")


def _check_problem(operator: Any) -> float:
    """Raise unless ``operator`` is linear with Gaussian noise; return the noise std (may be 0)."""
    return linear_gaussian_std(operator, "mmps", "dps")


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-item inner products of ``(M, ...)`` tensors, shaped ``(M, 1, ..., 1)`` to broadcast back."""
    return (a * b).reshape(a.shape[0], -1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int, shift: float, sigma: float
) -> tuple[Tensor, Tensor]:
    """``iters`` CG iterations on ``M u = b``, ``M = shift I + K`` with ``K`` positive semi-definite, from ``u = 0``,
    independently per item of the batch.

    An item stops moving once its residual is at rounding level, ``|r| <= eps |b|`` (so extra iterations are
    harmless). The curvature ``p^T M p`` of every direction is checked up to rounding, ``tol = eps |M| |p|^2`` (``|M|``
    estimated by the largest ``|M p| / |p|`` met so far): with ``shift = 0`` a direction with ``p^T M p <= tol`` (``M``
    singular or indefinite along ``p``) raises a :class:`RangeError`; with ``shift > 0`` a direction along which
    ``K`` is negative, ``p^T M p - shift |p|^2 < -tol``, stops that item at its current iterate (the safeguard of
    truncated CG; ``u = 0`` if it happens at the first iteration), which keeps every step ``alpha = r^T r / p^T M p``
    below about ``1 / shift``.

    Args:
        matvec: ``v -> M v`` for a batch of vectors shaped like ``b``.
        b: ``(M, ...)`` right-hand sides.
        iters: number of iterations (>= 1).
        shift: the known part ``sigma_y^2`` of ``M``.
        sigma: the current noise level (for the error message only).

    Returns:
        ``(M, ...)`` the iterates and a ``(M,)`` bool tensor: the items stopped by the curvature test.
    """
    u = torch.zeros_like(b)
    r = b
    p = r
    rr = bb = _dot(b, b)
    eps = torch.finfo(b.dtype).eps
    done = bb == 0  # a zero right-hand side is solved by u = 0
    broke = torch.zeros_like(done)
    norm = torch.zeros_like(bb)
    for _ in range(iters):
        if bool(done.all()):
            break  # every item solved or stopped: further iterations would not move u
        mp = matvec(p)
        pmp = _dot(p, mp)
        pp = _dot(p, p)
        seen = pp > 0
        gain = torch.where(seen, (_dot(mp, mp) / torch.where(seen, pp, torch.ones_like(pp))).sqrt(), 0.0)
        norm = torch.maximum(norm, gain)  # a lower bound on |M|, from every direction met so far
        tol = eps * norm * pp
        bad = ~done & ((pmp <= tol) if shift == 0 else (pmp - shift * pp < -tol))
        if shift == 0 and bool(bad.any()):
            raise RangeError(
                f"mmps: with noise std 0 the system A Cov[x0 | x_s] A^T must be positive definite, but at sigma = "
                f"{sigma:.4g} a CG direction has curvature p^T M p = {float(pmp[bad].min()):.3g}, not above rounding "
                "(A Cov A^T is singular, or the denoiser's Jacobian is not a covariance there, as for a learned "
                "denoiser at high noise); give the operator a Gaussian noise std > 0, or use linear_solver='gmres'"
            )
        broke = broke | bad
        done = done | bad
        alpha = torch.where(done, torch.zeros_like(rr), rr / torch.where(done, torch.ones_like(pmp), pmp))
        u = u + alpha * p
        r = r - alpha * mp
        rr_next = _dot(r, r)
        beta = torch.where(done, torch.zeros_like(rr), rr_next / torch.where(done, torch.ones_like(rr), rr))
        p = r + beta * p
        rr = rr_next
        done = done | (rr <= eps**2 * bb)
    return u, broke.reshape(-1)


def gmres(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """``iters`` GMRES iterations on ``M u = b`` from ``u = 0``, independently per item: the ``u`` of the Krylov space
    ``span(b, M b, ..., M^(iters-1) b)`` with the smallest ``|b - M u|`` (any invertible ``M``, symmetric or not,
    definite or not).

    Arnoldi with modified Gram-Schmidt builds an orthonormal basis ``V`` and the ``(iters + 1, iters)`` Hessenberg
    matrix ``H`` with ``M V_k = V_{k+1} H``; the small least-squares problem ``min |beta e_1 - H c|`` is solved by the
    pseudo-inverse of ``H`` (float64), so an exhausted Krylov space (a zero new basis vector) needs no special case.

    Args:
        matvec: ``v -> M v`` for a batch of vectors shaped like ``b``.
        b: ``(M, ...)`` right-hand sides.
        iters: number of iterations (>= 1).

    Returns:
        ``(M, ...)`` the iterates.
    """
    eps = torch.finfo(b.dtype).eps
    norm = _dot(b, b).sqrt()
    basis = [b / torch.where(norm > 0, norm, torch.ones_like(norm))]
    h = torch.zeros(b.shape[0], iters + 1, iters, dtype=torch.float64, device=b.device)
    for j in range(iters):
        w = matvec(basis[j])
        scale = _dot(w, w).sqrt()
        for i, v in enumerate(basis):
            hij = _dot(w, v)
            h[:, i, j] = hij.reshape(-1).to(torch.float64)
            w = w - hij * v
        wn = _dot(w, w).sqrt()
        h[:, j + 1, j] = wn.reshape(-1).to(torch.float64)
        keep = wn > eps * scale
        basis.append(torch.where(keep, w / torch.where(keep, wn, torch.ones_like(wn)), torch.zeros_like(w)))
        if not bool(keep.any()):
            break  # every Krylov space exhausted: u is exact, the remaining columns of H stay zero
    rhs = torch.zeros(b.shape[0], iters + 1, 1, dtype=torch.float64, device=b.device)
    rhs[:, 0, 0] = norm.reshape(-1).to(torch.float64)
    c = (torch.linalg.pinv(h) @ rhs)[:, :, 0].to(b.dtype)
    return sum(c[:, j].reshape(-1, *([1] * (b.dim() - 1))) * basis[j] for j in range(len(basis) - 1))


def posterior_denoise(
    prior: Any,
    operator: Any,
    y: Tensor,
    x: Tensor,
    sigma: float,
    var_y: float,
    iters: int,
    linear_solver: str = "cg",
    clip: bool = False,
) -> tuple[Tensor, Tensor]:
    """The MMPS posterior denoiser ``D_y(x, sigma)`` (module docstring): one denoiser call and ``iters + 1``
    vector-Jacobian products through it (fewer when CG converges or stops early).

    Args:
        prior: a prior with the ``denoiser`` capability, differentiable in its input.
        operator: a linear operator.
        y: observations, one per item of ``x`` (already stacked).
        x: states at noise level ``sigma``.
        sigma: the noise level ``s > 0``.
        var_y: the observation noise variance ``sigma_y^2``.
        iters: iterations of the linear solver.
        linear_solver: ``"cg"`` (:func:`conjugate_gradient`) or ``"gmres"`` (:func:`gmres`).
        clip: clamp ``D`` to [0, 1] inside the graph, so that the covariance is that of the clamped denoiser.

    Returns:
        ``D_y`` shaped like ``x`` and the ``(M,)`` bool tensor of the items whose CG stopped on a negative
        covariance curvature (all False for GMRES).
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = prior.denoise(xg, sigma)
        if not x0.requires_grad:
            raise TypeError(
                f"mmps: needs a denoiser differentiable in its input (autograd), but "
                f"{getattr(prior, 'name', type(prior).__name__)!r} returned a tensor without a graph"
            )
        if clip:
            x0 = x0.clamp(0.0, 1.0)

        def cov(v: Tensor, keep: bool = True) -> Tensor:
            """``sigma^2 J^T v``: one vector-Jacobian product through the denoiser call above."""
            (g,) = torch.autograd.grad(x0, xg, grad_outputs=v, retain_graph=keep)
            return sigma**2 * g

        def matvec(v: Tensor) -> Tensor:
            return var_y * v + operator.forward(cov(operator.adjoint(v)))

        d = x0.detach()
        b = y - operator.forward(d)
        if linear_solver == "cg":
            u, broke = conjugate_gradient(matvec, b, iters, var_y, sigma)
        else:
            u, broke = gmres(matvec, b, iters), torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
        return d + cov(operator.adjoint(u), keep=False), broke


def mmps(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 100,
    linear_iters: int = 1,
    linear_solver: str = "cg",
    eta: float = 1.0,
    clip: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """Moment-matching posterior sampling: DDIM on the Tweedie-covariance posterior denoiser (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability, differentiable in its input (autograd).
        operator: any linear operator (``forward`` and ``adjoint`` only, no SVD needed) with Gaussian noise of any
            std; std 0 needs a positive-definite ``A Cov A^T`` with CG (module docstring).
        y: observations.
        n_samples: N samples per observation item, run batched as ``N * B`` items.
        generator: the random generator.
        steps: denoising steps on the prior's schedule (100, the paper's image-restoration benchmark), one
            denoiser call each.
        linear_iters: iterations of the linear solver per step (1, the paper's benchmark and azula's default), one
            vector-Jacobian product each.
        linear_solver: ``"cg"`` (conjugate gradients, the paper's) or ``"gmres"`` (azula's default; robust to the
            indefinite systems of learned denoisers at high noise, module docstring).
        eta: DDIM noise parameter in [0, 1] (1, the paper's DDPM ancestral sampler; 0: deterministic DDIM).
        clip: clamp the denoiser's output to [0, 1] before its moments are used (the benchmark's ``clip_denoised``;
            the Jacobian then goes through the clamp). Off by default (the paper's algorithm); needed with a learned
            denoiser and CG beyond one iteration (module docstring).

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"cg_stopped": (B,)}``: per observation item, the fraction of
        (sample, step) pairs whose CG stopped on a negative covariance curvature (0 for an exact denoiser and for
        GMRES; a learned denoiser at high noise levels, module docstring).

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "mmps")
    if isinstance(linear_iters, bool) or not isinstance(linear_iters, int) or linear_iters < 1:
        raise ValueError(f"mmps: linear_iters must be an integer >= 1, got {linear_iters!r}")
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"mmps: linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}")
    eta = check_unit(eta, "eta", "mmps")
    if not isinstance(clip, bool):
        raise TypeError(f"mmps: clip must be a bool, got {clip!r}")
    check_tensor(y, "y")
    var_y = _check_problem(operator) ** 2
    sig = schedule(prior, steps)
    x = start(operator, y, n_samples, sig[0], generator)
    ys = stack_batch(y, n_samples)
    stopped = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
    for s, s_next in itertools.pairwise(sig):
        x0_y, broke = posterior_denoise(prior, operator, ys, x, s, var_y, linear_iters, linear_solver, clip)
        stopped += broke
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if eta > 0 else None
        x = ddim_step(x, x0_y, s, s_next, eta, noise)
    return unstack_batch(x, n_samples), {"cg_stopped": unstack_batch(stopped, n_samples).float().mean(0) / steps}
