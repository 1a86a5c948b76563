"""The VAE's decoder likelihood: a discretised logistic on 256 grey levels (one component, PixelCNN++ style).

Pixels of 8-bit images take the values ``k / 255``. Given the decoder's location ``m`` and log-scale ``log s`` of one
pixel, the level ``k`` has probability ``F((k + 1/2) / 255) - F((k - 1/2) / 255)`` with ``F`` the logistic CDF, and the
two edge levels take the tails (``k = 0`` gets ``F(1/510)``, ``k = 255`` gets ``1 - F(1 - 1/510)``). This is a
probability *mass* over the 256 levels, so ``log p(x | z) <= 0`` and the ELBO is a bound on the log-probability of
the 8-bit image in nats; bits/dim is ``-ELBO / (D ln 2)`` with no dequantisation term. Equivalently it is the
distribution of ``round(255 clamp(X, 0, 1)) / 255`` for ``X ~ Logistic(m, s)``, whose mean
:func:`logistic_clamped_mean` gives in closed form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LEVELS = 256
HALF_BIN = 0.5 / (LEVELS - 1)
LOG_SCALE_MIN = -8.0


def discretized_logistic_log_prob(x: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """Per-pixel ``log P(x)`` of the discretised logistic; ``x`` on the grid ``k / 255`` (off-grid ``x`` is the
    centre of its own bin).

    Args:
        x: images in [0, 1].
        loc: location ``m`` of each pixel on the [0, 1] scale (unconstrained).
        log_scale: ``log s`` of each pixel (clamped below at :data:`LOG_SCALE_MIN`).

    Returns:
        log-probabilities in nats, the shape of ``x``.

    Shape:
        x, loc, log_scale: any common shape.
    """
    log_scale = log_scale.clamp_min(LOG_SCALE_MIN)
    inv_s = torch.exp(-log_scale)
    centred = x - loc
    plus_in = inv_s * (centred + HALF_BIN)
    min_in = inv_s * (centred - HALF_BIN)
    log_cdf_plus = F.logsigmoid(plus_in)  # log F(upper), the mass of the left edge level
    log_one_minus_cdf_min = F.logsigmoid(-min_in)  # log (1 - F(lower)), the mass of the right edge level
    # log(F(b) - F(a)) = log F(b) + log(1 - exp(log F(a) - log F(b))): no cancellation in either tail
    diff = F.logsigmoid(min_in) - log_cdf_plus
    log_delta = log_cdf_plus + torch.log(-torch.expm1(diff.clamp_max(-1e-30)))
    # if the two log-CDFs still round to the same float, use the density at the centre times the bin width
    mid_in = inv_s * centred
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in) + math.log(2 * HALF_BIN)
    inner = torch.where(diff < -1e-20, log_delta, log_pdf_mid)
    return torch.where(x < HALF_BIN, log_cdf_plus, torch.where(x > 1.0 - HALF_BIN, log_one_minus_cdf_min, inner))


def logistic_clamped_mean(loc: Tensor, log_scale: Tensor) -> Tensor:
    """``E[clamp(X, 0, 1)]`` for ``X ~ Logistic(loc, exp(log_scale))``, a value in [0, 1].

    ``E[clamp(X, 0, 1)] = int_0^1 P(X > t) dt = 1 - s (softplus((1 - m) / s) - softplus(-m / s))``. The discretised
    distribution (rounding to the 256 levels) has the same mean up to ``1/510``; this form is smooth, cheap and
    differentiable, so it is what ``decode`` returns.
    """
    s = torch.exp(log_scale.clamp_min(LOG_SCALE_MIN))
    return (1.0 - s * (F.softplus((1.0 - loc) / s) - F.softplus(-loc / s))).clamp(0.0, 1.0)


def discretized_logistic_sample(loc: Tensor, log_scale: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw 8-bit images ``round(255 clamp(X, 0, 1)) / 255`` with ``X ~ Logistic(loc, s)``. Shape: that of ``loc``."""
    u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype).clamp(1e-6, 1 - 1e-6)
    x = loc + torch.exp(log_scale.clamp_min(LOG_SCALE_MIN)) * (torch.log(u) - torch.log1p(-u))
    return torch.round(x.clamp(0.0, 1.0) * (LEVELS - 1)) / (LEVELS - 1)
