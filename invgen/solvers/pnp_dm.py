"""PnP-DM: split-Gibbs sampling with a diffusion model as plug-and-play prior (Wu, Sun, Chen, Zhang, Yue & Bouman,
"Principled Probabilistic Imaging using Diffusion Models as Plug-and-Play Priors", NeurIPS 2024; the DPnP sampler of
Xu & Chi 2024 belongs to the same split-Gibbs family).

Target. The posterior is augmented with a copy ``z`` of the image, ``pi(x, z) ∝ p(x) N(z; x, rho^2 I) p(y | z)``,
and the sampler alternates the two conditionals of ``pi``:

* likelihood step ``z ~ p(z | x, y) ∝ p(y | z) N(z; x, rho^2 I)``. For a linear operator with Gaussian noise this
  is a Gaussian with precision ``A^T A / sigma_y^2 + I / rho^2`` and mean ``(A^T A / sigma_y^2 + I / rho^2)^-1
  (A^T y / sigma_y^2 + x / rho^2)``, drawn exactly: in the operator's spectral coordinates where it has an SVD
  (``has_svd``: a per-coordinate Gaussian), otherwise by perturb-and-MAP, ``z = argmin ||y + sigma_y n_2 - A z||^2 /
  sigma_y^2 + ||z - x - rho n_1||^2 / rho^2`` solved by conjugate gradients (also an exact draw, up to the CG
  tolerance). Noiseless data (``sigma_y = 0``) make ``z`` the projection of ``x + rho n`` on ``A z = y`` (exact too).
  Any other operator or noise model (nonlinear ``sketch``, Poisson noise) takes the reference code's Langevin step:
  ``langevin_steps`` unadjusted Langevin moves ``z <- z + g (grad log p(y | z) - (z - x) / rho^2) + sqrt(2 g) n``
  started at ``z = x`` (approximate);
* prior step ``x ~ p(x | z)`` with ``z`` read as a diffusion state ``x_rho = x_0 + rho n``: the reverse diffusion
  started at noise level ``rho`` from the state ``z``, here DDPM ancestral steps
  (:func:`invgen.solvers.ddpm.ancestral_step`) through ``rho`` and the levels below ``rho`` of a Karras grid (the
  reference's EDM discretisation: ``prior_steps = 100`` levels, exponent 7, from ``40`` down to ``0.001`` on our scale,
  clipped to the prior's ``[sigma_min, sigma_max]``), then 0.

``rho`` is annealed, ``rho_k = max(rho_0 decay^k, rho_min)``: large at first (fast mixing, the data dominate the
likelihood step), then held at the floor ``rho_min``. The ``x``-marginal of ``pi`` is the posterior of the problem
with the observation noise inflated to covariance ``sigma_y^2 I + rho^2 A A^T`` (``z``'s is the posterior under the
prior smoothed by ``rho``), so the samples are exact only as ``rho_min -> 0``; the tests measure how far they are.
Samples: the final ``x`` (a prior-step output: an image of the prior's support, as the reference returns) rather
than the last ``z`` (which carries ``rho``-sized Gaussian noise in every direction the data do not fix).

Scales and defaults. The reference works on [-1, 1] images (``x' = 2 x - 1``, so ``rho' = 2 rho``, ``sigma' = 2
sigma``); its published runs (``commands.sh``: Gaussian and motion deblurring, super-resolution) use ``rho' = 10``,
``decay = 0.9``, ``rho_min' = 0.3`` and 100 iterations (``configs/sampler/pnp_edm.yaml``), the EDM 100-level Karras
grid over ``[0.002, 80]``; converted: ``rho_0 = 5``, ``rho_min = 0.15``, grid ``[0.001, 40]``. Its Langevin step
(phase retrieval) is ``gamma' = 1e-4`` with 100 moves on the [-1, 1] scale, which is ``gamma = gamma' / 4 = 2.5e-5``
here (the same chain in the rescaled variable).

NFE: iteration ``k`` costs ``1 + #{grid levels < rho_k}`` denoiser calls (one at ``rho_k``, one per grid level
below it), :func:`nfe` sums them (3673 with the defaults on a prior valid over the whole grid).

What differs from the reference code (``zihuiwu/PnP-DM-public``):

* the prior step uses DDPM ancestral steps (the exact Gaussian transition ``q(x_s' | x_s, x_0)`` with the denoised
  estimate) where the reference takes Euler-Maruyama steps of the reverse SDE (its ``*_sde`` modes, which the
  published runs use) or Euler steps of the probability-flow ODE; both are discretisations of the same reverse
  process;
* the reverse diffusion starts at ``rho`` itself; the reference starts at the first grid level below ``rho``
  (treating ``z`` as slightly less noisy than it is);
* one independent chain per sample, returning its final ``x``; the reference's main sampler instead keeps 20
  states of one chain after 40 burn-in iterations (its batch sampler returns the final ``x`` of each chain);
* the reference initialises ``x`` with ``A^+ y`` (SVD operators) or noise; here too: ``A^+ y`` for linear operators
  with an SVD and ``0.5 + 0.5 n`` (its noise, rescaled) for the others (the undamped pseudo-inverse of a Gaussian
  blur turns noise 0.05 into values of +-3e4, which the chain does not forget);
* the Langevin step size is capped at ``rho_k^2 / 10`` so that the chain stays stable for small ``rho_min``
  (inactive with the defaults: ``rho_min^2 / 10 = 2.25e-3``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.operators.base import conjugate_gradient
from invgen.solvers.base import likelihood_grad, stack_batch, unstack_batch
from invgen.solvers.ddpm import ancestral_step
from invgen.solvers.schedules import karras_sigmas

GRID_SIGMA_MIN = 0.001  # the EDM grid's 0.002 on [-1, 1]
GRID_SIGMA_MAX = 40.0  # the EDM grid's 80 on [-1, 1]
GRID_RHO = 7.0


def _positive_int(value: Any, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"pnp_dm: {name} must be an integer >= {least}, got {value!r}")
    return value


def _positive(value: Any, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise RangeError(f"pnp_dm: {name} must be finite and > 0, got {value!r}")
    return v


def rho_schedule(iterations: int, rho_0: float, rho_min: float, decay: float) -> list[float]:
    """The coupling strengths ``rho_k = max(rho_0 decay^k, rho_min)``, ``k = 0 .. iterations - 1``."""
    return [max(rho_0 * decay**k, rho_min) for k in range(iterations)]


def prior_grid(prior: Any, prior_steps: int) -> list[float]:
    """The descending Karras grid of the prior step (module docstring), within the prior's noise range."""
    lo = max(GRID_SIGMA_MIN, float(getattr(prior, "sigma_min", 0.0)))
    hi = min(GRID_SIGMA_MAX, float(getattr(prior, "sigma_max", math.inf)))
    return karras_sigmas(prior_steps, lo, hi, GRID_RHO).tolist()


def prior_levels(grid: list[float], rho: float) -> list[float]:
    """Noise levels of one prior step: ``rho``, the grid levels below it, then 0 (``len - 1`` denoiser calls)."""
    return [rho, *(s for s in grid if s < rho), 0.0]


def nfe(prior: Any, iterations: int, rho_0: float, rho_min: float, decay: float, prior_steps: int) -> int:
    """Denoiser calls of a run with these options (module docstring)."""
    grid = prior_grid(prior, prior_steps)
    return sum(len(prior_levels(grid, r)) - 1 for r in rho_schedule(iterations, rho_0, rho_min, decay))


def exact_likelihood_step(
    operator: Any, ys: Tensor, x: Tensor, rho: float, sigma_y: float, generator: torch.Generator
) -> Tensor:
    """An exact draw of ``z ~ N(z; x, rho^2 I) p(y | z)`` for a linear operator with Gaussian noise.

    Shape:
        ys: ``(M, ...)`` stacked observations; x: ``(M, C, H, W)`` -> ``(M, C, H, W)``.
    """
    kw = {"dtype": x.dtype, "device": x.device}
    if getattr(operator, "has_svd", False):
        zx = operator.svd_vt(x)
        uty = operator.svd_ut(ys)
        s = operator.singulars(zx).expand_as(zx)
        n = torch.randn(zx.shape, generator=generator, **kw)
        if sigma_y > 0:
            prec = s**2 / sigma_y**2 + 1.0 / rho**2
            z = (s * uty / sigma_y**2 + zx / rho**2) / prec + prec.rsqrt() * n
        else:  # the observed coordinates are fixed by the data, the others keep N(x, rho^2)
            seen = s > 0
            z = torch.where(seen, uty / torch.where(seen, s, torch.ones_like(s)), zx + rho * n)
        return operator.svd_v(z)
    xp = x + rho * torch.randn(x.shape, generator=generator, **kw)
    if sigma_y == 0:
        return xp + operator.pinv(ys - operator(xp))
    yp = ys + sigma_y * torch.randn(ys.shape, generator=generator, **kw)
    lam = sigma_y**2 / rho**2
    return conjugate_gradient(lambda v: operator.gram(v) + lam * v, operator.adjoint(yp) + lam * xp, xp)


def langevin_likelihood_step(
    operator: Any, ys: Tensor, x: Tensor, rho: float, step: float, steps: int, generator: torch.Generator
) -> Tensor:
    """``steps`` unadjusted Langevin moves on ``log p(y | z) - ||z - x||^2 / (2 rho^2)`` from ``z = x``."""
    z = x.clone()
    noise_std = math.sqrt(2.0 * step)
    for _ in range(steps):
        _, g = likelihood_grad(operator, ys, z)
        n = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = z + step * (g - (z - x) / rho**2) + noise_std * n
    return z


def prior_step(prior: Any, z: Tensor, levels: list[float], generator: torch.Generator) -> Tensor:
    """Reverse diffusion from the state ``z`` at ``levels[0]`` down to 0 (DDPM ancestral steps)."""
    x = z
    for s, s_next in itertools.pairwise(levels):
        x0 = prior.denoise(x, s)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = ancestral_step(x, x0, s, s_next, noise)
    return x


def pnp_dm(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    iterations: int = 100,
    rho_0: float = 5.0,
    rho_min: float = 0.15,
    decay: float = 0.9,
    prior_steps: int = 100,
    langevin_steps: int = 100,
    langevin_step: float = 2.5e-5,
) -> Tensor:
    """PnP-DM split-Gibbs posterior sampling (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: a linear operator with Gaussian noise (std >= 0) for the exact likelihood step; any other operator
            or noise model takes the Langevin likelihood step.
        y: observations.
        n_samples: N samples per observation item, run batched as ``N * B`` independent chains.
        generator: the random generator.
        iterations: Gibbs iterations (100, the reference's).
        rho_0: initial coupling std on the [0, 1] scale (5, the reference's 10 on [-1, 1]).
        rho_min: floor of the annealed coupling std (0.15, the reference's 0.3 on [-1, 1]).
        decay: ``rho_k = max(rho_0 decay^k, rho_min)``, in (0, 1] (0.9, the reference's).
        prior_steps: levels of the full Karras grid of the prior step (100, the reference's); each prior step uses
            the levels below its ``rho``.
        langevin_steps: Langevin moves per likelihood step where it is not exact (100, the reference's).
        langevin_step: Langevin step size on the [0, 1] scale (2.5e-5, the reference's 1e-4 on [-1, 1]).

    Returns:
        ``(N, B, C, H, W)`` samples (the final ``x`` of each chain).

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    _positive_int(iterations, "iterations")
    _positive_int(prior_steps, "prior_steps", 2)
    _positive_int(langevin_steps, "langevin_steps")
    rho_0, rho_min = _positive(rho_0, "rho_0"), _positive(rho_min, "rho_min")
    langevin_step = _positive(langevin_step, "langevin_step")
    decay = float(decay)
    if not (0.0 < decay <= 1.0):
        raise RangeError(f"pnp_dm: decay must lie in (0, 1], got {decay!r}")
    if rho_min > rho_0:
        raise RangeError(f"pnp_dm: rho_min must be <= rho_0 = {rho_0}, got {rho_min}")
    lo, hi = float(getattr(prior, "sigma_min", 0.0)), float(getattr(prior, "sigma_max", math.inf))
    if rho_0 > hi or rho_min < lo:
        raise RangeError(
            f"pnp_dm: rho_0 and rho_min must lie in the prior's noise range [{lo:.4g}, {hi:.4g}], got rho_0 = "
            f"{rho_0}, rho_min = {rho_min}"
        )
    check_tensor(y, "y")
    noise = operator.noise
    exact = bool(getattr(operator, "linear", False)) and noise.name == "gaussian"
    sigma_y = float(noise.std) if noise.name == "gaussian" else math.nan
    if not exact and sigma_y == 0:
        raise RangeError(
            f"pnp_dm: the Langevin likelihood step for the nonlinear {operator.name!r} needs noisy observations "
            "(Gaussian std > 0)"
        )
    grid = prior_grid(prior, prior_steps)
    ys = stack_batch(y, n_samples)
    kw = {"dtype": y.dtype, "device": y.device}
    if getattr(operator, "has_svd", False):
        x = operator.pinv(ys)
    else:
        x_shape = tuple(operator.input_shape(tuple(ys.shape)))
        x = 0.5 + 0.5 * torch.randn(x_shape, generator=generator, **kw)
    for rho in rho_schedule(iterations, rho_0, rho_min, decay):
        if exact:
            z = exact_likelihood_step(operator, ys, x, rho, sigma_y, generator)
        else:
            step = min(langevin_step, rho**2 / 10.0)
            z = langevin_likelihood_step(operator, ys, x, rho, step, langevin_steps, generator)
        x = prior_step(prior, z, prior_levels(grid, rho), generator)
    return unstack_batch(x, n_samples)


__all__ = ["nfe", "pnp_dm", "prior_grid", "prior_levels", "rho_schedule"]
