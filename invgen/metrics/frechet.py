"""Frechet distance in the features of a small classifier that the project trains: "FD-<dataset>-CNN".

A sample-quality figure that needs no downloaded weights, computed the same way for every prior family so that
their samples are comparable. It is the FID formula (Heusel et al., 2017),

    FD = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2}),

with the means ``mu`` and covariances ``S`` of the 128 penultimate features of the shipped CNN classifier of the
dataset (:mod:`invgen.metrics.classifier`), **not** of Inception-v3: values are not FIDs and are comparable only
with other "FD-<dataset>-CNN" values of the same dataset (and the same shipped classifier). Report them with the
sample counts: like FID, the estimate is biased upwards for few samples (compare with the floor of two disjoint
halves of the test set at the same count; README "Sample quality").

The matrix root is taken on symmetric matrices only, in float64: ``S_1^{1/2}`` from an eigendecomposition (negative
round-off eigenvalues set to 0), then the eigenvalues of the symmetric PSD ``S_1^{1/2} S_2 S_1^{1/2}`` give the
trace term as ``sum sqrt(max(l, 0))``. This equals ``tr sqrtm(S_1 S_2)`` (the product's eigenvalues are the same)
without the complex round-off of ``scipy.linalg.sqrtm`` on a non-symmetric product, and stays accurate for the
rank-deficient covariances that dead ReLU features give. The trace term is averaged over the two orders, so the
distance is exactly symmetric.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from invgen.errors import ShapeError
from invgen.metrics.classifier import apply, check_input, load_classifier


def features(x: Tensor, dataset: str, batch_size: int = 500, name: str = "x") -> Tensor:
    """The 128 penultimate features of the shipped CNN classifier of ``dataset`` for each image.

    The classifier is loaded once per (dataset, device) and cached; it runs in float32 on ``x``'s device, in batches
    of ``batch_size``, without building a graph.

    Args:
        x: images in [0, 1] (clamp samples that leave it slightly: ``x.clamp(0, 1)``).
        dataset: ``"mnist"``, ``"fashion-mnist"`` (1 channel) or ``"cifar10"`` (3 channels).
        batch_size: images per network call.
        name: how ``x`` is called in error messages.

    Returns:
        float32 features on the CPU.

    Raises:
        ShapeError: if ``x`` is not ``(B, C, 32, 32)`` with the dataset's channel count.
        RangeError: if ``x`` leaves [0, 1] or holds NaN/Inf.
        UnknownNameError: for a dataset without a shipped classifier.

    Shape:
        x: ``(B, C, 32, 32)`` -> ``(B, 128)``.

    Example:
        >>> features(torch.rand(4, 1, 32, 32), "mnist").shape  # doctest: +SKIP
        torch.Size([4, 128])
    """
    net = load_classifier(dataset, x.device if isinstance(x, Tensor) else None)
    check_input(x, net, dataset, name)
    return apply(net, x, "features", batch_size)


def feature_statistics(x: Tensor, dataset: str, name: str = "x") -> tuple[Tensor, Tensor]:
    """Mean and covariance (float64, unbiased) of the classifier features of ``x`` (see :func:`features`).

    Compute them once for a reference set and pass them to :func:`frechet_distance` as ``x_reference`` to score
    many sample sets against it.

    Shape:
        x: ``(B, C, 32, 32)`` with ``B >= 2`` -> ``((128,), (128, 128))``.
    """
    if isinstance(x, Tensor) and x.dim() == 4 and x.shape[0] < 2:
        raise ShapeError(f"{name}: need at least 2 images for a covariance, got shape {tuple(x.shape)}")
    f = features(x, dataset, name=name).to(torch.float64)
    return f.mean(0), torch.cov(f.T)


def _sym_sqrt(a: Tensor) -> Tensor:
    """Root of a symmetric PSD matrix from its eigendecomposition (negative round-off eigenvalues set to 0)."""
    vals, vecs = torch.linalg.eigh(0.5 * (a + a.T))
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def _trace_root(a: Tensor, b: Tensor) -> Tensor:
    """``tr (a^{1/2} b a^{1/2})^{1/2}`` from the eigenvalues of that symmetric PSD matrix (negative round-off: 0)."""
    root = _sym_sqrt(a)
    middle = root @ (0.5 * (b + b.T)) @ root
    return torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0).sqrt().sum()


def frechet_distance_from_statistics(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """The Frechet (2-Wasserstein squared) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^{1/2} cov2 cov1^{1/2})^{1/2})`` in float64, with symmetric
    matrix roots only (module docstring). Covariances must be symmetric positive semi-definite. Exactly symmetric in
    its two distributions.

    Returns:
        The distance, >= 0 up to round-off (clamped at 0).

    Shape:
        mu: ``(d,)``; cov: ``(d, d)``.

    Example:
        >>> i = torch.eye(2, dtype=torch.float64)
        >>> frechet_distance_from_statistics(torch.zeros(2), i, torch.ones(2), 4 * i)
        4.0
    """
    mu1, mu2 = (torch.as_tensor(m).detach().to(torch.float64).cpu() for m in (mu1, mu2))
    cov1, cov2 = (torch.as_tensor(c).detach().to(torch.float64).cpu() for c in (cov1, cov2))
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    for name, value, shape in (("mu2", mu2, (d,)), ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
        if mu1.dim() != 1 or tuple(value.shape) != shape:
            raise ShapeError(
                f"frechet distance: expected mu1 (d,), mu2 (d,), cov1 and cov2 (d, d); got mu1 {tuple(mu1.shape)} "
                f"and {name} {tuple(value.shape)}"
            )
    # tr (S1^{1/2} S2 S1^{1/2})^{1/2} = tr (S2^{1/2} S1 S2^{1/2})^{1/2}; the mean of the two makes the result exactly
    # symmetric (each alone differs from the other by ~1e-7 relative when the covariances are rank deficient).
    trace_root = 0.5 * (_trace_root(cov1, cov2) + _trace_root(cov2, cov1))
    value = (mu1 - mu2).pow(2).sum() + (torch.trace(cov1) + torch.trace(cov2)) - 2.0 * trace_root
    return max(float(value), 0.0)


def _statistics(x: Any, dataset: str, name: str) -> tuple[Tensor, Tensor]:
    if isinstance(x, tuple) and len(x) == 2:
        return x
    return feature_statistics(x, dataset, name)


def frechet_distance(
    x_samples: Tensor | tuple[Tensor, Tensor], x_reference: Tensor | tuple[Tensor, Tensor], dataset: str
) -> float:
    """FD-<dataset>-CNN: Frechet distance between two image sets in the features of the shipped classifier.

    Not an FID (the features are those of a small CNN trained on ``dataset``, see the module docstring); 0 for two
    sets with the same feature mean and covariance, symmetric in its two arguments. Lower is better.

    Args:
        x_samples: images in [0, 1] (e.g. a prior's samples, clamped to [0, 1]), at least 2; or their
            ``(mean, covariance)`` from :func:`feature_statistics`.
        x_reference: reference images (e.g. the test split) in [0, 1], or their ``(mean, covariance)``.
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``: whose classifier gives the features.

    Returns:
        The distance (float64 arithmetic).

    Raises:
        ShapeError: wrong shape or channel count for the dataset, or fewer than 2 images.
        RangeError: values outside [0, 1] or NaN/Inf.

    Shape:
        x_samples: ``(N, C, 32, 32)``; x_reference: ``(M, C, 32, 32)``; N and M may differ.

    Example:
        >>> from invgen.data import mnist
        >>> x, _ = mnist("test")  # doctest: +SKIP
        >>> frechet_distance(x[:5000], x[5000:], "mnist")  # doctest: +SKIP
    """
    mu1, cov1 = _statistics(x_samples, dataset, "x_samples")
    mu2, cov2 = _statistics(x_reference, dataset, "x_reference")
    return frechet_distance_from_statistics(mu1, cov1, mu2, cov2)
