"""Noise-level schedules shared by the diffusion solvers, on the variance-exploding [0, 1] image scale.

Diffusion solvers here work with states ``x_sigma = x0 + sigma * n`` of [0, 1] images, the convention of the
``denoiser`` capability. A VP (DDPM) state ``x_t = sqrt(abar_t) x0' + sqrt(1 - abar_t) eps`` of [-1, 1] images is the
same state rescaled: ``x_sigma = (x_t / sqrt(abar_t) + 1) / 2`` with ``sigma = sqrt((1 - abar_t) / abar_t) / 2``, so
DDPM, DDIM, DDRM, DPS and the rest are written once, in this form, for every prior with a denoiser.
"""

from __future__ import annotations

import torch
from torch import Tensor


def vp_sigmas(
    steps: int,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    train_steps: int = 1000,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Noise levels of ``steps`` evenly spaced timesteps of a linear-beta DDPM schedule, descending.

    Timesteps ``t_i = round(linspace(train_steps - 1, 0, steps))`` (the DDIM "uniform" spacing) mapped to the [0, 1]
    scale: ``sigma = sqrt((1 - abar_t) / abar_t) / 2``. With the defaults sigma runs from about 78.5 to 0.005.

    Returns:
        ``(steps,)`` descending noise levels (no trailing zero).
    """
    if not isinstance(steps, int) or not 1 <= steps <= train_steps:
        raise ValueError(f"steps: expected an integer in [1, {train_steps}], got {steps!r}")
    betas = torch.linspace(beta_start, beta_end, train_steps, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    t = torch.linspace(train_steps - 1, 0, steps, dtype=torch.float64).round().long()
    return (((1 - abar[t]) / abar[t]).sqrt() / 2).to(dtype)


def karras_sigmas(
    steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The schedule of Karras et al. (2022): ``(sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - ...))^rho``.

    Returns:
        ``(steps,)`` descending noise levels (no trailing zero).
    """
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps: expected an integer >= 2, got {steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).to(dtype)


def prior_sigmas(prior: object, steps: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The schedule a prior was trained with (its ``schedule`` attribute, a VP schedule), else the default VP one."""
    sched = getattr(prior, "schedule", None)
    if sched is not None and hasattr(sched, "beta_start"):
        return vp_sigmas(
            steps, beta_start=sched.beta_start, beta_end=sched.beta_end, train_steps=sched.steps, dtype=dtype
        )
    return vp_sigmas(steps, dtype=dtype)
