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
    spacing: str = "uniform",
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Noise levels of ``steps`` timesteps of a linear-beta DDPM schedule, descending.

    Timesteps, mapped to the [0, 1] scale by ``sigma = sqrt((1 - abar_t) / abar_t) / 2`` (with the defaults sigma
    runs from about 78.5 to 0.005):

    * ``spacing="uniform"``: ``t_i = round(linspace(T - 1, 0, steps))`` (the DDIM "uniform" spacing);
    * ``spacing="quad"``: ``t_i = T - 1 - floor(sqrt(linspace(0, T^2, steps)))``, the last one set to 0 (the "quad"
      spacing of the DiffPIR reference code: large strides at high noise, small ones near the image, the last
      stride about ``T (1 - sqrt(1 - 1 / (steps - 1)))``, so at most about ``T / 2`` steps: more raise).

    Returns:
        ``(steps,)`` descending noise levels (no trailing zero).
    """
    if not isinstance(steps, int) or not 1 <= steps <= train_steps:
        raise ValueError(f"steps: expected an integer in [1, {train_steps}], got {steps!r}")
    betas = torch.linspace(beta_start, beta_end, train_steps, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0)
    if spacing == "uniform":
        t = torch.linspace(train_steps - 1, 0, steps, dtype=torch.float64).round().long()
    elif spacing == "quad":
        seq = torch.linspace(0.0, float(train_steps) ** 2, steps, dtype=torch.float64).sqrt().floor().long()
        t = (train_steps - 1 - seq).clamp_min(0)  # seq runs 0 .. T: the last timestep is 0
        if steps > 1 and not bool((t[1:] < t[:-1]).all()):
            raise ValueError(
                f"steps: quad spacing repeats timesteps with {steps} steps of a {train_steps}-step schedule (its last "
                f"strides fall below one timestep); use fewer steps or spacing='uniform'"
            )
    else:
        raise ValueError(f"spacing: expected 'uniform' or 'quad', got {spacing!r}")
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


def prior_sigmas(prior: object, steps: int, dtype: torch.dtype = torch.float64, spacing: str = "uniform") -> Tensor:
    """The schedule a prior was trained with (its ``schedule`` attribute, a VP schedule), else the default VP one;
    ``spacing`` as in :func:`vp_sigmas`."""
    sched = getattr(prior, "schedule", None)
    if sched is not None and hasattr(sched, "beta_start"):
        return vp_sigmas(
            steps,
            beta_start=sched.beta_start,
            beta_end=sched.beta_end,
            train_steps=sched.steps,
            spacing=spacing,
            dtype=dtype,
        )
    return vp_sigmas(steps, spacing=spacing, dtype=dtype)
