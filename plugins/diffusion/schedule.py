"""The VP (DDPM) noise schedule and its VE-equivalent noise levels.

A VP state ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (x0 on [-1, 1]) equals ``sqrt(abar_t) (x0 + s_t eps)``
with ``s_t = sqrt((1 - abar_t) / abar_t)``. The network sees the VP state and is conditioned on ``log s_t``, so it
defines a denoiser at every noise level, and on the [0, 1] image scale the noise std is ``sigma = s_t / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


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


def c_noise(sigma_m11: Tensor) -> Tensor:
    """Network conditioning for a noise level on the [-1, 1] scale: an affine map of ``log sigma``.

    The schedule's range (about 0.01 to 157) maps to about [40, 1006], the range of a DDPM timestep embedding.
    """
    return 100.0 * (torch.log(sigma_m11) + 5.0)


SIGMA_MIN = math.sqrt(1e-4 / (1 - 1e-4)) / 2  # smallest training noise on the [0, 1] scale
