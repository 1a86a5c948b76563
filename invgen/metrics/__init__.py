"""Image quality and posterior metrics.

Reference metrics compare a batch of predictions with a batch of ground truths and return one value per image:

- :func:`psnr`: peak signal-to-noise ratio in dB, equal to ``skimage.metrics.peak_signal_noise_ratio``.
- :func:`ssim`: structural similarity, equal to ``skimage.metrics.structural_similarity``.
- :func:`lpips`: LPIPS AlexNet v0.1 distance (the ``lpips`` package).

Edge agreement (sketch-to-image) compares the Canny edges of a batch with a *binary* sketch of thin lines
(``invgen.make_sketch(truth)``, or a drawing thresholded at 0.5), one value per image (:mod:`invgen.metrics.edges`):

- :func:`edge_f1`: symmetric F1 of the edge pixels within a 1-pixel tolerance, in [0, 1] (higher is better).
- :func:`edge_chamfer`: symmetric chamfer distance in pixels (lower is better).

Registered as ``edge_f1`` and ``edge_chamfer`` with a clean reference *image* (``fn(x, ref)``, like PSNR): the
sketch is then ``make_sketch(ref)``.

Sample-quality metrics compare two *sets* of images (they are not per-image, so not in the metric registry):

- :func:`frechet_distance`: "FD-<dataset>-CNN", the FID formula in the 128 features of a small CNN classifier that
  the project trains and ships for ``mnist``, ``fashion-mnist`` and ``cifar10`` (no downloaded weights; not an FID).
- :func:`label_consistency`: how often that classifier assigns given labels to the images.

These two range-check as well: the classifier only knows [0, 1] images, so clamp samples first.

Posterior metrics take the ``(N, B, C, H, W)`` samples of a solve:

- :func:`data_consistency`: noise-normalised residual ``||A(x) - y|| / sigma`` per sample.
- :func:`diversity`: mean pairwise LPIPS (or RMSE) between the samples of each item.
- :func:`coverage` and :func:`credible_interval`: per-pixel central credible intervals and how often they hold
  the truth.

Images are ``(B, C, H, W)`` on the [0, 1] scale (``data_range=1.0``). Metrics do not clamp, they range-check: an
image with values outside ``[0, data_range]`` (beyond a round-off tolerance of 1e-6) raises
:class:`invgen.errors.RangeError` with its min/max and the fix (0..255 images: divide by 255, or pass
``data_range=255`` to psnr/ssim). Solver samples may leave [0, 1] slightly; the caller clamps them, explicitly
(``post.clamped(0, 1)`` or ``post.samples.clamp(0, 1)``) before scoring them, as the benchmark runner and
``invgen solve`` do. The same holds for ``diversity(metric="lpips")``; the posterior metrics on raw samples
(``data_consistency``, ``coverage``, ``credible_interval``, ``diversity(metric="l2")``) take any finite values.

``lpips``, ``torchvision`` and ``skimage`` are imported only inside the functions that need them, so
``import invgen.metrics`` stays cheap. LPIPS needs no setup: its AlexNet trunk ships with the package.

Example:
    >>> import torch
    >>> from invgen import metrics
    >>> x = torch.rand(2, 3, 32, 32)
    >>> metrics.psnr(x, x.clamp(0.1, 0.9)).shape
    torch.Size([2])
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The submodules are cheap (torch only; lpips, torchvision and skimage are imported inside the functions that need
# them). Importing them here binds the package attributes to the functions, not to the submodules of the same name.
from invgen.metrics.edges import edge_chamfer, edge_f1
from invgen.metrics.lpips import lpips, lpips_available, lpips_model
from invgen.metrics.posterior import coverage, credible_interval, data_consistency, diversity
from invgen.metrics.psnr import check_pair, psnr
from invgen.metrics.ssim import ssim

# The sample-quality metrics are bound on first use (PEP 562), so that ``python -m invgen.metrics.classifier`` (the
# classifier's trainer) does not find its own module already imported by the package.
_LAZY = {
    "feature_statistics": "invgen.metrics.frechet",
    "frechet_distance": "invgen.metrics.frechet",
    "frechet_distance_from_statistics": "invgen.metrics.frechet",
    "label_consistency": "invgen.metrics.classifier",
}

__all__ = [
    "check_pair",
    "coverage",
    "credible_interval",
    "data_consistency",
    "diversity",
    "edge_chamfer",
    "edge_f1",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "label_consistency",
    "lpips",
    "lpips_available",
    "lpips_model",
    "psnr",
    "ssim",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'invgen.metrics' has no attribute {name!r}")
