"""The VP (DDPM) noise schedule and its VE-equivalent noise levels.

A VP state ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (x0 on [-1, 1]) equals ``sqrt(abar_t) (x0 + s_t eps)``
with ``s_t = sqrt((1 - abar_t) / abar_t)``. The network sees the VP state and is conditioned on ``log s_t``, so it
defines a denoiser at every noise level, and on the [0, 1] image scale the noise std is ``sigma = s_t / 2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invgen.priors.vp import VPSchedule

__all__ = ["SIGMA_MIN", "VPSchedule", "c_noise"]


def c_noise(sigma_m11: Tensor) -> Tensor:
    """Network conditioning for a noise level on the [-1, 1] scale: an affine map of ``log sigma``.

    The schedule's range (about 0.01 to 157) maps to about [40, 1006], the range of a DDPM timestep embedding.
    """
    return 100.0 * (torch.log(sigma_m11) + 5.0)


SIGMA_MIN = math.sqrt(1e-4 / (1 - 1e-4)) / 2  # smallest training noise on the [0, 1] scale
