"""Diffusion posterior sampling, DPS (Chung, Kim, Mccann, Klasky & Ye, ICLR 2023).

DPS approximates the noisy likelihood ``p(y | x_s)`` by ``p(y | x0_hat(x_s))``, ``x0_hat = D(x_s, s)`` the prior's
denoiser, and differentiates it through the denoiser with autograd, so any differentiable operator (the nonlinear
``sketch`` too) works. Each step, in the VE form of :mod:`invgen.solvers.schedules`:

    x0 = D(x, s_i)                                       (with autograd)
    g  = grad_x ||y - A(x0)||                            (guidance="norm", the paper's code)
    x <- ddim_step(x, x0, s_i, s_{i+1}, eta, n) - step_i * g

``eta = 1`` (default) is the paper's DDPM ancestral step (Algorithm 1), ``eta < 1`` its DDIM variant.

Step size. ``zeta`` is the paper's step (its released configs use 1.0 for super-resolution, inpainting and Gaussian
deblurring), applied as in its code to the *norm* of the residual (not the square) in its VP coordinates on [-1, 1]
images. Rewritten on our scale (``x_t = sqrt(abar) (2 x_s - 1)``, a residual on [-1, 1] twice ours for a linear
operator) the same move is ``step_i = 2 zeta sqrt((s_i^2 + 1/4) (s_{i+1}^2 + 1/4))``. The step is a heuristic: it
does not scale with the noise std or with the image size, so its effective strength differs between problems (on
the 16-pixel test problems it is far stronger than on 256 x 256 images).

``guidance="squared"`` instead follows the DPS likelihood approximation at the reverse process' own step size:
``x <- ddim_step(...) + zeta (s_i^2 - s_{i+1}^2) grad_x log p(y | x0_hat(x))`` (for Gaussian noise
``-||y - A(x0)||^2 / (2 sigma_y^2)``; any noise model through ``operator.log_likelihood``), since the DDPM step
moves ``x`` by ``(s_i^2 - s_{i+1}^2)`` times the prior score.

A joint observation whose parts have different Gaussian noise (:mod:`invgen.operators.joint`) enters the norm
whitened, ``||whiten(y - A(x0))||``: each part's residual in units of the reference std, so the parts weigh as their
likelihoods do (``whiten`` is the identity for every other noise model).

NFE: one denoiser call (forward and backward) per step, ``steps`` in all. A state that becomes NaN/Inf or explodes
(``|x| > 1e6``, checked every 10 steps) stops DPS with a :class:`invgen.errors.DivergenceError` naming ``zeta``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.solvers.base import check_state, check_steps, check_unit, stack_batch, unstack_batch
from invgen.solvers.ddim import ddim_step
from invgen.solvers.ddpm import schedule, start

GUIDANCE = ("norm", "squared")


def dps(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
    zeta: float = 1.0,
    guidance: str = "norm",
    eta: float = 1.0,
) -> tuple[Tensor, dict[str, Any]]:
    """Diffusion posterior sampling (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability (differentiable: autograd goes through it).
        operator: any differentiable invgen operator, linear or not.
        y: observations.
        n_samples: N samples per observation item, batched as ``N * B`` in one denoiser call per step.
        generator: the random generator.
        steps: number of steps (1000, the paper's).
        zeta: guidance step (1.0, the paper's default for super-resolution, inpainting and Gaussian deblurring).
        guidance: ``"norm"`` (the paper: gradient of ``||y - A(x0)||``) or ``"squared"`` (the log-likelihood at
            the reverse step size, module docstring).
        eta: 1 (DDPM ancestral, the paper's Algorithm 1) down to 0 (deterministic DDIM between guidance steps).

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"residual": final mean ||y - A(x)|| per item, (B,)}`` (whitened for a
        joint observation, see the module docstring).

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "dps")
    eta = check_unit(eta, "eta", "dps")
    zeta = float(zeta)
    if not (math.isfinite(zeta) and zeta >= 0):
        raise RangeError(f"dps: zeta must be finite and >= 0, got {zeta}")
    if guidance not in GUIDANCE:
        raise ValueError(f"dps: guidance must be one of {GUIDANCE}, got {guidance!r}")
    check_tensor(y, "y")
    if guidance == "squared" and operator.noise.name == "gaussian" and float(operator.noise.std) <= 0:
        raise RangeError("dps: guidance='squared' needs a likelihood; the operator's Gaussian noise std is 0")
    sig = schedule(prior, steps)
    x = start(operator, y, n_samples, sig[0], generator)
    ys = stack_batch(y, n_samples)
    for i, (s, s_next) in enumerate(itertools.pairwise(sig)):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = prior.denoise(xg, s)
            if guidance == "norm":
                r = operator.noise.whiten(ys - operator(x0)).reshape(xg.shape[0], -1)
                loss = r.pow(2).sum(1).clamp_min(1e-30).sqrt().sum()
                step = 2 * zeta * math.sqrt((s**2 + 0.25) * (s_next**2 + 0.25))
            else:
                loss = -operator.log_likelihood(ys, x0).sum()
                step = zeta * (s**2 - s_next**2)
            (g,) = torch.autograd.grad(loss, xg)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if eta > 0 else None
        x = ddim_step(x, x0.detach(), s, s_next, eta, noise) - step * g
        check_state(x, "dps", i + 1, steps, detail=f"zeta={zeta:g}, guidance={guidance!r}")
    with torch.no_grad():
        resid = operator.noise.whiten(ys - operator(x)).reshape(x.shape[0], -1).norm(dim=1)
    return unstack_batch(x, n_samples), {"residual": unstack_batch(resid, n_samples).mean(0)}
