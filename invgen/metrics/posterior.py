"""Metrics of a set of posterior samples: data consistency, diversity, credible intervals and their coverage.

Every function takes the samples of one solve, ``(N, B, C, H, W)``: N samples for each of B observations
(``Posterior.samples``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from invgen.checks import check_image, check_tensor
from invgen.errors import RangeError, ShapeError, UnknownNameError

if TYPE_CHECKING:  # pragma: no cover
    from invgen.operators.base import Operator


def check_samples(samples: object, name: str = "samples", min_n: int = 1) -> Tensor:
    """Raise unless ``samples`` is a finite floating point ``(N, B, C, H, W)`` tensor with ``N >= min_n``."""
    check_tensor(samples, name)
    assert isinstance(samples, Tensor)
    if samples.dim() != 5:
        hint = " (add the sample dimension with x[None])" if samples.dim() == 4 else ""
        raise ShapeError(f"{name}: expected an (N, B, C, H, W) tensor, got shape {tuple(samples.shape)}{hint}")
    if samples.shape[0] < min_n:
        raise ShapeError(f"{name}: need at least {min_n} samples (N >= {min_n}), got shape {tuple(samples.shape)}")
    return samples


def data_consistency(samples: Tensor, y: Tensor, operator: Operator, normalize: bool = True) -> Tensor:
    """Noise-normalised residual of each sample: ``||A(x) - y|| / sigma``, divided by ``sqrt(m)`` if ``normalize``.

    ``sigma`` is the standard deviation of the operator's Gaussian noise and ``m`` the number of entries of one
    observation. For a sample that explains ``y`` as well as the truth does, ``||A(x) - y||^2 / sigma^2`` is about
    chi-square with m degrees of freedom, so the normalised value is about 1 (within ``~1 / sqrt(2m)``) and the
    raw value about ``sqrt(m)``; clearly above 1 means the sample misses the data, clearly below 1 that it fits the
    noise.

    Args:
        samples: posterior samples.
        y: the observations they were drawn for, one per item.
        operator: the forward operator; its noise model must be Gaussian with ``std > 0``.
        normalize: divide by ``sqrt(m)`` (True) or return ``||A(x) - y|| / sigma`` (False).

    Returns:
        One value per sample and item.

    Raises:
        RangeError: if the operator's noise is not Gaussian with ``std > 0``.
        ShapeError: if ``A(samples[n])`` and ``y`` differ in shape.

    Shape:
        samples: ``(N, B, C, H, W)``; y: ``(B, ...)`` (the operator's output for B items) -> ``(N, B)``.

    Example:
        >>> import invgen
        >>> op = invgen.operator("identity", noise=invgen.noise("gaussian", std=0.1))
        >>> x = torch.rand(1, 1, 64, 64)
        >>> data_consistency(x[None], op.measure(x), op)  # doctest: +SKIP
        tensor([[1.0042]])
    """
    from invgen.operators.noise import GaussianNoise

    check_samples(samples)
    check_tensor(y, "y")
    noise = operator.noise
    if not isinstance(noise, GaussianNoise) or noise.std <= 0:
        raise RangeError(
            f"data_consistency: needs Gaussian observation noise with std > 0 to normalise the residual, got "
            f"{noise.__class__.__name__}({noise.extra_repr()})"
        )
    n, b = samples.shape[:2]
    if y.shape[0] != b:
        raise ShapeError(
            f"y: expected {b} observations (one per item of samples {tuple(samples.shape)}), got shape {tuple(y.shape)}"
        )
    ax = operator(samples.reshape(n * b, *samples.shape[2:]))
    if tuple(ax.shape[1:]) != tuple(y.shape[1:]):
        raise ShapeError(
            f"y: the operator maps the samples to observations of shape {tuple(ax.shape[1:])} per "
            f"item, got y of shape {tuple(y.shape)}"
        )
    residual = ax.reshape(n, b, -1) - y.to(ax.dtype).reshape(1, b, -1)
    value = residual.norm(dim=2) / noise.std
    if normalize:
        value = value / math.sqrt(residual.shape[2])
    return value


def _pairwise_rmse(samples: Tensor) -> Tensor:
    n, b = samples.shape[:2]
    flat = samples.reshape(n, b, -1)
    total = flat.new_zeros(b)
    for i in range(n - 1):
        total = total + (flat[i + 1 :] - flat[i]).pow(2).mean(dim=2).sqrt().sum(dim=0)
    return total


def _pairwise_lpips(samples: Tensor, net: str) -> Tensor:
    from invgen.metrics.lpips import _distance, _features, _prepare, lpips_model

    n, b = samples.shape[:2]
    model = lpips_model(net, samples.device)
    size = tuple(samples.shape[-2:])
    totals = []
    with torch.set_grad_enabled(torch.is_grad_enabled() and samples.requires_grad):
        for item in range(b):  # features of the N samples of one item at a time
            feats = _features(model, _prepare(samples[:, item], "samples", who="diversity"))
            total = feats[0].new_zeros(())
            for i in range(n - 1):
                rest = [f[i + 1 :] for f in feats]
                first = [f[i : i + 1].expand_as(r) for f, r in zip(feats, rest)]
                total = total + _distance(model, first, rest, False, size).sum()
            totals.append(total)
    return torch.stack(totals)


def diversity(samples: Tensor, metric: str = "lpips", net: str = "alex") -> Tensor:
    """Mean pairwise distance between the N samples of each item: 0 when they are all equal.

    Args:
        samples: posterior samples, ``N >= 2``.
        metric: ``"lpips"`` (LPIPS v0.1, images of at least 32x32, see :func:`invgen.metrics.lpips`) or ``"l2"``
            (root mean squared difference per pair, any size).
        net: the LPIPS trunk.

    Returns:
        The mean over the ``N (N - 1) / 2`` pairs of each item, in the samples' dtype.

    Raises:
        ShapeError: if N < 2 (or, for LPIPS, the images are below 32 px or not 1 or 3 channels).
        RangeError: for LPIPS, samples outside [0, 1] (clamp them first: ``samples.clamp(0, 1)``).
        UnknownNameError: for an unknown ``metric``.

    Shape:
        samples: ``(N, B, C, H, W)`` -> ``(B,)``.

    Example:
        >>> samples = torch.rand(4, 2, 1, 8, 8)
        >>> diversity(samples, metric="l2").shape
        torch.Size([2])
    """
    check_samples(samples, min_n=2)
    n = samples.shape[0]
    if metric == "l2":
        total = _pairwise_rmse(samples)
    elif metric == "lpips":
        total = _pairwise_lpips(samples, net)
    else:
        raise UnknownNameError(f"diversity: unknown metric {metric!r} (known: lpips, l2)")
    return (total / (n * (n - 1) / 2)).to(samples.dtype)


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise RangeError(f"level: expected a credibility level in (0, 1), got {level}")
    return level


def credible_interval(samples: Tensor, level: float = 0.9) -> tuple[Tensor, Tensor]:
    """Per-pixel central credible interval ``[q_{(1 - level) / 2}, q_{(1 + level) / 2}]`` of the samples.

    The quantiles are ``torch.quantile``'s default (linear interpolation between order statistics, as numpy's),
    computed from one sort so that they also work on tensors above ``torch.quantile``'s size limit.

    Args:
        samples: posterior samples.
        level: the credibility level in (0, 1).

    Returns:
        ``(lower, upper)`` bounds.

    Shape:
        samples: ``(N, B, C, H, W)`` -> two ``(B, C, H, W)`` tensors.

    Example:
        >>> lo, hi = credible_interval(torch.rand(100, 1, 1, 4, 4), level=0.9)
        >>> bool((lo <= hi).all())
        True
    """
    check_samples(samples)
    level = _check_level(level)
    ordered = samples.sort(dim=0).values
    n = samples.shape[0]

    def quantile(q: float) -> Tensor:
        pos = q * (n - 1)
        below = math.floor(pos)
        above = min(below + 1, n - 1)
        frac = pos - below
        return ordered[below] + frac * (ordered[above] - ordered[below])

    return quantile((1.0 - level) / 2.0), quantile((1.0 + level) / 2.0)


def coverage(samples: Tensor, truth: Tensor, level: float = 0.9) -> Tensor:
    """Fraction of the pixels of each item whose true value lies in the central ``level`` credible interval.

    For calibrated samples (the truth drawn from the same distribution as the samples) the coverage is about
    ``level``; below it the posterior is overconfident, above it underconfident.

    Args:
        samples: posterior samples.
        truth: the ground truths, one per item.
        level: the credibility level in (0, 1).

    Returns:
        The fraction of entries (channels and pixels) inside the interval, per item, in the samples' dtype.

    Shape:
        samples: ``(N, B, C, H, W)``; truth: ``(B, C, H, W)`` -> ``(B,)``.

    Example:
        >>> samples = torch.randn(1000, 1, 1, 16, 16)
        >>> coverage(samples, torch.randn(1, 1, 16, 16), level=0.9)  # doctest: +SKIP
        tensor([0.9023])
    """
    check_samples(samples)
    check_image(truth, "truth")
    if tuple(truth.shape) != tuple(samples.shape[1:]):
        raise ShapeError(
            f"truth: expected shape {tuple(samples.shape[1:])} (one image per item of samples "
            f"{tuple(samples.shape)}), got {tuple(truth.shape)}"
        )
    lower, upper = credible_interval(samples, level)
    truth = truth.to(device=samples.device, dtype=samples.dtype)
    inside = (truth >= lower) & (truth <= upper)
    return inside.reshape(inside.shape[0], -1).to(samples.dtype).mean(dim=1)
