"""DDPM ancestral sampling (Ho et al. 2020), written once in the VE form of :mod:`invgen.solvers.schedules`.

The VE chain ``x_s = x0 + s n`` is Markov in ``s``: going down from ``s`` to ``s' < s`` reverses the Gaussian step
``x_s = x_s' + sqrt(s^2 - s'^2) n``. Its posterior given ``x0`` is

    q(x_s' | x_s, x0) = N(x0 + (s'^2 / s^2) (x_s - x0),  s'^2 (s^2 - s'^2) / s^2 I),

which is DDPM's ``q(x_{t-1} | x_t, x0)`` (mean ``sqrt(abar') beta / (1 - abar) x0 + sqrt(alpha) (1 - abar') /
(1 - abar) x_t``, variance ``(1 - abar') / (1 - abar) beta``) rescaled by ``x_s = (x_t / sqrt(abar) + 1) / 2``,
``s = sqrt((1 - abar) / abar) / 2``; for strided timesteps ``beta`` is ``1 - abar / abar'``. Ancestral sampling
replaces ``x0`` by the denoiser ``D(x_s, s)`` and draws from this posterior: with ``s_up`` the posterior std and
``s_down = sqrt(s'^2 - s_up^2) = s'^2 / s``, ``x <- x0 + s_down (x - x0) / s + s_up n``.

The sampler is *unconditional*: it draws from the prior. It is registered as a solver so that the prior itself can
be benchmarked through the same entry point; ``y`` only fixes the batch size and image shape (``x`` has the shape
``operator.input_shape(y.shape)``), so the usual call is the ``identity`` operator with a dummy ``y``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.solvers.base import check_steps, unstack_batch
from invgen.solvers.schedules import prior_sigmas


def schedule(prior: Any, steps: int, spacing: str = "uniform") -> list[float]:
    """The prior's descending noise levels for ``steps`` denoiser calls, with a trailing 0 (the last call's target);
    ``spacing``: ``"uniform"`` or ``"quad"`` timesteps (:func:`~invgen.solvers.schedules.vp_sigmas`)."""
    return [float(s) for s in prior_sigmas(prior, steps, spacing=spacing)] + [0.0]


def start(operator: Any, y: Tensor, n: int, sigma_max: float, generator: torch.Generator) -> Tensor:
    """``N * B`` initial states: the VE image ``0.5 + sqrt(sigma_max^2 + 1/4) n`` of a VP ``x_T ~ N(0, I)``.

    (``x_s = (x_T / sqrt(abar_T) + 1) / 2`` and ``1 / (2 sqrt(abar)) = sqrt(s^2 + 1/4)``.)

    Shape:
        -> ``(N * B, C, H, W)`` with ``(B, C, H, W) = operator.input_shape(y.shape)``, in :func:`stack_batch` order.
    """
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    noise = torch.randn((n * x_shape[0], *x_shape[1:]), generator=generator, dtype=y.dtype, device=y.device)
    return 0.5 + math.sqrt(sigma_max**2 + 0.25) * noise


def ancestral_step(x: Tensor, x0: Tensor, sigma: float, sigma_next: float, noise: Tensor) -> Tensor:
    """One draw from ``q(x_s' | x_s = x, x0)`` (module docstring); ``sigma_next = 0`` returns ``x0``.

    Args:
        x: states at noise level ``sigma``.
        x0: the denoised estimate ``D(x, sigma)``.
        sigma: current level ``s > 0``.
        sigma_next: next level ``0 <= s' < s``.
        noise: standard normal noise shaped like ``x``.
    """
    s_up = math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2)) / sigma
    return x0 + (sigma_next**2 / sigma**2) * (x - x0) + s_up * noise


def ddpm(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
) -> Tensor:
    """Unconditional DDPM ancestral sampling of the prior (``y`` only gives the batch size and image shape).

    Loop: ``x0 = D(x, s_i)``; ``x <- ancestral_step(x, x0, s_i, s_{i+1}, n)`` over the prior's schedule
    (:func:`~invgen.solvers.schedules.prior_sigmas`, ``steps`` evenly spaced timesteps, then 0). NFE: ``steps``.

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: any operator; only ``operator.input_shape(y.shape)`` is used (the usual one: ``identity``).
        y: a tensor shaped like an observation; its values are ignored.
        n_samples: N samples per item of ``y``, batched as ``N * B`` in one denoiser call per step.
        generator: the random generator.
        steps: number of denoiser calls (1000, the DDPM paper's ``T``; fewer = strided timesteps).

    Returns:
        ``(N, B, C, H, W)`` prior samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "ddpm")
    check_tensor(y, "y")
    sig = schedule(prior, steps)
    x = start(operator, y, n_samples, sig[0], generator)
    for s, s_next in itertools.pairwise(sig):
        x0 = prior.denoise(x, s)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = ancestral_step(x, x0, s, s_next, noise)
    return unstack_batch(x, n_samples)


__all__ = ["ancestral_step", "ddpm", "schedule", "start"]
