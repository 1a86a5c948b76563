"""DDRM: Denoising Diffusion Restoration Models (Kawar, Elad, Ermon & Song, NeurIPS 2022).

DDRM runs a DDIM-like reverse diffusion in the spectral coordinates of the operator, ``A = U diag(s) V^T``, where a
linear Gaussian problem ``y = A x + sigma_y n`` decouples: for every coordinate ``j`` with ``s_j > 0`` the data give
``ybar_j = (U^T y)_j / s_j``, a noisy copy of ``xbar_j = (V^T x)_j`` with noise std ``nu_j = sigma_y / s_j``; the
coordinates with ``s_j = 0`` (the null space) are not observed.

VE form. The paper already writes its sampler with VE states ``x_t = x_0 + sigma_t n`` (it divides DDPM states by
``sqrt(abar_t)``), on [-1, 1] images. Our states ``x_sigma = x_0 + sigma n`` of [0, 1] images are the same states
under the affine map ``x' = 2 x - 1`` (``sigma' = 2 sigma``, ``sigma_y' = 2 sigma_y``, ``ybar' = 2 ybar - V^T 1``).
Every DDRM update is an affine combination of ``xbar_0``, ``ybar`` and ``xbar_t`` (coefficients summing to one)
plus noise whose std only involves ratios of noise levels, so the algorithm commutes with that map and runs here
unchanged on ``x_sigma`` with ``sigma`` and ``sigma_y`` on the [0, 1] scale; the prior mean (0.5 on the [0, 1]
scale, 0 on [-1, 1]) only enters through the denoiser ``D(x, sigma) = E[x_0 | x_sigma]``.

One step from ``sigma_i`` to ``sigma_{i+1}`` (``sigma_{i+1} = 0`` for the last), with ``xbar_0 = V^T D(x, sigma_i)``,
``ebar = (V^T x - xbar_0) / sigma_i`` and fresh noise ``n``, per coordinate (the paper's Eq. 8):

* ``s_j = 0`` (not observed), DDIM-like: ``xbar_0 + sqrt(1 - eta^2) sigma_{i+1} ebar + eta sigma_{i+1} n``;
* ``sigma_{i+1} < nu_j`` (the state is less noisy than the data): ``xbar_0 + sqrt(1 - eta^2) sigma_{i+1}
  (ybar - xbar_0) / nu_j + eta sigma_{i+1} n``;
* ``sigma_{i+1} >= nu_j`` (noisier than the data): ``eta_b ybar + (1 - eta_b) xbar_0 + sqrt(sigma_{i+1}^2 -
  eta_b^2 nu_j^2) n``.

With noiseless data (``nu_j = 0``) every observed coordinate takes the last case, which ends on ``ybar`` for
``eta_b = 1``: the samples then satisfy ``A x = y``. The start is the paper's Eq. 7, ``p(x_T | y)``: ``ybar +
sqrt(sigma_T^2 - nu_j^2) n`` on observed coordinates with ``sigma_T >= nu_j``, ``V^T 0.5 + sigma_T n`` elsewhere
(the VE image of the VP ``x_T ~ N(0, I)``). Defaults are the paper's: ``eta = 0.85``, ``eta_b = 1``, 20 steps.
NFE: one batched denoiser call per step.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.solvers.base import check_steps, check_unit, stack_batch, unstack_batch
from invgen.solvers.schedules import prior_sigmas


def check_svd_problem(operator: Any, who: str) -> float:
    """Raise unless ``operator`` is linear with an SVD and Gaussian noise; return the noise std (may be 0)."""
    if not getattr(operator, "linear", False):
        raise TypeError(
            f"{who}: needs a linear operator with an SVD; {getattr(operator, 'name', type(operator).__name__)!r} is "
            "nonlinear (use dps, which differentiates any operator)"
        )
    if not getattr(operator, "has_svd", False):
        raise TypeError(
            f"{who}: needs a linear operator with a cheap SVD (has_svd); {operator.name!r} has none (SVD operators: "
            "identity, inpaint, superres, colorize, sensing; use dps or diffpir for the others)"
        )
    noise = operator.noise
    if noise.name != "gaussian":
        raise TypeError(f"{who}: needs Gaussian observation noise, got {noise.name!r}")
    return float(noise.std)


def spectral_setup(operator: Any, y: Tensor, n_samples: int) -> tuple[tuple[int, ...], Tensor, Tensor]:
    """Batch ``y`` for ``n_samples`` chains (:func:`stack_batch` order) and move it to spectral coordinates.

    Returns:
        ``(x_shape, uty, s)``: the shape of the ``N * B`` stacked states, ``U^T y`` of the stacked observations and
        the singular values expanded to its shape (zero on the null space).
    """
    ys = stack_batch(y, n_samples)
    uty = operator.svd_ut(ys)
    return tuple(operator.input_shape(tuple(ys.shape))), uty, operator.singulars(uty).expand_as(uty)


def spectral_data(uty: Tensor, s: Tensor, sigma_y: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(seen, ybar, nu)``: where ``s > 0``, the observed coordinates ``ybar = U^T y / s`` and their noise std
    ``nu = sigma_y / s``; elsewhere ``ybar = 0`` and ``nu = inf`` (the data say nothing there)."""
    seen = s > 0
    s_safe = torch.where(seen, s, torch.ones_like(s))
    ybar = torch.where(seen, uty / s_safe, torch.zeros_like(uty))
    return seen, ybar, torch.where(seen, sigma_y / s_safe, torch.full_like(s, math.inf))


def _check_options(steps: int, eta: float, eta_b: float) -> None:
    check_steps(steps, "ddrm")
    check_unit(eta, "eta", "ddrm")
    check_unit(eta_b, "eta_b", "ddrm")


def ddrm(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 20,
    eta: float = 0.85,
    eta_b: float = 1.0,
    clip: bool = False,
) -> Tensor:
    """DDRM posterior sampling in the operator's spectral coordinates (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability (``prior.denoise(x, sigma)``).
        operator: a linear operator with an SVD (``has_svd``) and Gaussian noise of any std (0 included).
        y: observations.
        n_samples: N samples per observation item, run batched as ``N * B`` items.
        generator: the random generator.
        steps: number of denoising steps on the prior's schedule (``prior_sigmas``), one denoiser call each.
        eta: noise fraction of the unobserved and the "less noisy than the data" coordinates, in [0, 1].
        eta_b: weight of the data in the "noisier than the data" coordinates, in [0, 1].
        clip: clamp the denoised estimate ``D(x_t, s_t)`` to the image range [0, 1] before it is used (the "clip
            denoised" practice of DDPM/DDIM codebases; off by default, so the exactness figures are those of the
            published algorithm). It keeps under-trained priors from drifting out of range, where an epsilon
            network's error is amplified by s_t.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    _check_options(steps, eta, eta_b)
    check_tensor(y, "y")
    sigma_y = check_svd_problem(operator, "ddrm")
    sigmas = [*prior_sigmas(prior, steps).tolist(), 0.0]
    x_shape, uty, s = spectral_setup(operator, y, n_samples)
    kw = {"dtype": y.dtype, "device": y.device}
    seen, ybar, nu = spectral_data(uty, s, sigma_y)  # nu: spectral noise std of ybar
    nu_safe = torch.where(nu > 0, nu, torch.ones_like(nu)).clamp_max(1e30)

    def randn() -> Tensor:
        return torch.randn(uty.shape, generator=generator, **kw)

    s_top = sigmas[0]
    mid = operator.svd_vt(torch.full(x_shape, 0.5, **kw))
    start_on_y = seen & (nu <= s_top)
    z = torch.where(start_on_y, ybar + (s_top**2 - nu.clamp_max(s_top) ** 2).sqrt() * randn(), mid + s_top * randn())
    x = operator.svd_v(z)
    for sig, nxt in itertools.pairwise(sigmas):
        x0 = prior.denoise(x, sig)
        z0 = operator.svd_vt(x0.clamp(0.0, 1.0) if clip else x0)
        ebar = (z - z0) / sig
        n = randn()
        hidden = z0 + math.sqrt(1 - eta**2) * nxt * ebar + eta * nxt * n
        below = z0 + math.sqrt(1 - eta**2) * nxt * (ybar - z0) / nu_safe + eta * nxt * n
        above = eta_b * ybar + (1 - eta_b) * z0 + (nxt**2 - eta_b**2 * nu.clamp_max(nxt) ** 2).sqrt() * n
        z = torch.where(seen, torch.where(nu <= nxt, above, below), hidden)
        x = operator.svd_v(z)
    return unstack_batch(x, n_samples)
