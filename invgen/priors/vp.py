"""Variance-preserving (DDPM) schedules on the invgen scale, shared by every network prior.

A VP state ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` equals ``sqrt(abar_t) (x0 + s_t eps)`` with
``s_t = sqrt((1 - abar_t) / abar_t)``: a VP network defines a denoiser at the VE noise level ``s_t`` of its data scale,
which is ``s_t / r`` on invgen's [0, 1] scale for data of range width ``r`` (``r = 2`` for [-1, 1]).

* :class:`VPSchedule`: the linear-beta schedule of Ho et al. (2020), which the diffusion solvers take their timestep
  grids from (:func:`invgen.solvers.schedules.prior_sigmas`);
* :func:`alphas_cumprod_from_config`: ``abar_t`` of a scheduler config (diffusers' fields), or of a name;
* :class:`VPTimesteps`: the continuous timestep of any noise level (the inverse of ``t -> s_t``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class VPSchedule:
    """Linear-beta DDPM schedule (Ho et al. 2020): ``beta`` from ``beta_start`` to ``beta_end`` over ``steps``."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    steps: int = 1000

    def alphas_cumprod(self, dtype: torch.dtype = torch.float64) -> Tensor:
        betas = torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0).to(dtype)

    def sigmas(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """VE-equivalent noise levels ``s_t`` on the [-1, 1] scale, increasing with t. Shape ``(steps,)``."""
        ab = self.alphas_cumprod()
        return ((1 - ab) / ab).sqrt().to(dtype)

    def to_dict(self) -> dict:
        return {"beta_start": self.beta_start, "beta_end": self.beta_end, "steps": self.steps}


def alphas_cumprod_from_config(cfg: dict[str, Any], dtype: torch.dtype = torch.float32) -> Tensor:
    """``abar_t`` of a DDPM/DDIM scheduler config, computed as diffusers does (float32 betas and cumprod) or, with
    ``dtype=torch.float64``, as guided-diffusion does.

    Args:
        cfg: the scheduler config (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` in
            ``linear``, ``scaled_linear``, ``squaredcos_cap_v2`` (alias ``cosine``), or explicit ``trained_betas``).
        dtype: the precision of the betas and their cumulative product.

    Returns:
        ``abar_t`` for ``t = 0 .. num_train_timesteps - 1`` as float64 (the ``dtype`` values, widened).

    Shape:
        output: ``(num_train_timesteps,)``.
    """
    n = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    schedule = cfg.get("beta_schedule", "linear")
    if cfg.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "scheduler config: rescale_betas_zero_snr=True (abar_T = 0, an infinite noise level) is not supported"
        )
    if cfg.get("trained_betas") is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=dtype)
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=dtype)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=dtype) ** 2
    elif schedule in ("squaredcos_cap_v2", "cosine"):  # the cosine schedule of Nichol & Dhariwal, betas capped at 0.999

        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=dtype)
    else:
        raise ValueError(f"scheduler config: beta_schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


def linear_schedule_of(cfg: dict[str, Any]) -> VPSchedule | None:
    """The :class:`VPSchedule` of a scheduler config with linear betas (None for other schedules or explicit betas)."""
    if cfg.get("beta_schedule", "linear") != "linear" or cfg.get("trained_betas") is not None:
        return None
    return VPSchedule(
        float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02)), int(cfg.get("num_train_timesteps", 1000))
    )


class VPTimesteps:
    """The continuous VP timestep of a VE noise level: ``t`` with ``s_t = sigma_data`` (``s_t`` as in the module doc).

    ``log s_t`` is interpolated linearly between integer timesteps, so a training level gets exactly its integer
    timestep; levels below the first training level give 0 and levels above the last give ``T - 1``.

    Args:
        alphas_cumprod: ``abar_t``, strictly decreasing in (0, 1), at least 2 values. Shape ``(T,)``.
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()) or not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be a strictly decreasing sequence in (0, 1) of at least 2 values")
        self.alphas_cumprod = abar
        self.log_sigmas = (0.5 * torch.log((1 - abar) / abar)).contiguous()  # log s_t on the data scale

    def __len__(self) -> int:
        return int(self.alphas_cumprod.numel())

    def __call__(self, sigma_data: float | Tensor) -> Tensor:
        """Float64 timesteps on the CPU of noise levels ``sigma_data`` on the network's data scale (any shape)."""
        s = torch.as_tensor(sigma_data).detach().to("cpu", torch.float64)
        ls = self.log_sigmas
        log_s = torch.log(s.clamp_min(0.0)).clamp(ls[0], ls[-1])  # log(0) = -inf clamps to t = 0
        i = torch.searchsorted(ls, log_s.contiguous()).clamp(1, ls.numel() - 1)
        lo, hi = ls[i - 1], ls[i]
        return (i - 1).to(torch.float64) + (log_s - lo) / (hi - lo)

    def sigma(self, t: float | Tensor) -> Tensor:
        """The inverse map: ``s_t`` (float64, data scale) of continuous timesteps in ``[0, T - 1]``."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, len(self) - 1)
        i = t.floor().long().clamp(0, len(self) - 2)
        w = t - i
        return torch.exp((1 - w) * self.log_sigmas[i] + w * self.log_sigmas[i + 1])
