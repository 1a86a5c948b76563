"""DDIM sampling (Song, Meng & Ermon 2021) with its ``eta`` parameter, in the VE form of
:mod:`invgen.solvers.schedules`.

DDIM's update ``x_{t-1} = sqrt(abar') x0 + sqrt(1 - abar' - sigma_t^2) eps + sigma_t n`` with
``eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)`` and ``sigma_t = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar /
abar')``, divided by ``sqrt(abar')`` and mapped to [0, 1] images, reads

    x <- x0 + sqrt(s'^2 - s_up^2) (x - x0) / s + s_up n,   s_up = eta * s' sqrt(s^2 - s'^2) / s,

with ``s, s'`` the current and next VE noise levels. ``eta = 0`` is the deterministic DDIM (an ODE solver: the same
``x_T`` gives the same sample), ``eta = 1`` is DDPM's ancestral step (:func:`invgen.solvers.ddpm.ancestral_step`).

Unconditional: ``y`` only gives the batch size and image shape (see :mod:`invgen.solvers.ddpm`).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.solvers.base import check_steps, check_unit, unstack_batch
from invgen.solvers.ddpm import schedule, start


def ddim_step(x: Tensor, x0: Tensor, sigma: float, sigma_next: float, eta: float, noise: Tensor | None) -> Tensor:
    """One DDIM step from level ``sigma`` to ``sigma_next`` (module docstring); ``sigma_next = 0`` returns ``x0``.

    Args:
        x: states at noise level ``sigma``.
        x0: the denoised estimate at ``x``.
        sigma: current level ``s > 0``.
        sigma_next: next level ``0 <= s' < s``.
        eta: stochasticity in [0, 1].
        noise: standard normal noise shaped like ``x`` (ignored, may be None, when ``eta = 0``).
    """
    s_up = eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2)) / sigma
    s_down = math.sqrt(max(sigma_next**2 - s_up**2, 0.0))
    out = x0 + (s_down / sigma) * (x - x0)
    return out + s_up * noise if s_up > 0 else out


def ddim(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 50,
    eta: float = 0.0,
    x_start: Tensor | None = None,
) -> Tensor:
    """Unconditional DDIM sampling of the prior (``y`` only gives the batch size and image shape).

    Loop: ``x0 = D(x, s_i)``; ``x <- ddim_step(x, x0, s_i, s_{i+1}, eta, n)`` over the prior's schedule
    (``steps`` evenly spaced timesteps, then 0). NFE: ``steps``.

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: any operator; only ``operator.input_shape(y.shape)`` is used (the usual one: ``identity``).
        y: a tensor shaped like an observation; its values are ignored.
        n_samples: N samples per item of ``y``, batched as ``N * B``.
        generator: the random generator.
        steps: number of denoiser calls (50, a common DDIM setting; the paper reports 10 to 1000).
        eta: 0 (deterministic DDIM, the paper's default) to 1 (DDPM-like ancestral noise).
        x_start: optional initial states ``(N, B, C, H, W)`` at the first noise level (default: drawn as the VE
            image of ``x_T ~ N(0, I)``); with ``eta = 0`` the map from ``x_start`` to samples is deterministic.

    Returns:
        ``(N, B, C, H, W)`` prior samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "ddim")
    eta = check_unit(eta, "eta", "ddim")
    check_tensor(y, "y")
    sig = schedule(prior, steps)
    if x_start is None:
        x = start(operator, y, n_samples, sig[0], generator)
    else:
        check_tensor(x_start, "x_start")
        x_shape = tuple(operator.input_shape(tuple(y.shape)))
        if tuple(x_start.shape) != (n_samples, *x_shape):
            raise ValueError(f"ddim: x_start must have shape {(n_samples, *x_shape)}, got {tuple(x_start.shape)}")
        x = x_start.to(dtype=y.dtype, device=y.device).reshape(n_samples * x_shape[0], *x_shape[1:])
    for s, s_next in itertools.pairwise(sig):
        x0 = prior.denoise(x, s)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if eta > 0 else None
        x = ddim_step(x, x0, s, s_next, eta, noise)
    return unstack_batch(x, n_samples)
