"""Image quality and posterior metrics.

Reference metrics compare a batch of predictions with a batch of ground truths and return one value per image:

- :func:`psnr`: peak signal-to-noise ratio in dB, equal to ``skimage.metrics.peak_signal_noise_ratio``.
- :func:`ssim`: structural similarity, equal to ``skimage.metrics.structural_similarity``.
- :func:`lpips`: LPIPS AlexNet v0.1 distance (the ``lpips`` package).

Posterior metrics take the ``(N, B, C, H, W)`` samples of a solve:

- :func:`data_consistency`: noise-normalised residual ``||A(x) - y|| / sigma`` per sample.
- :func:`diversity`: mean pairwise LPIPS (or RMSE) between the samples of each item.
- :func:`coverage` and :func:`credible_interval`: per-pixel central credible intervals and how often they hold
  the truth.

Images are ``(B, C, H, W)`` on the [0, 1] scale (``data_range=1.0``). Metrics do not clamp and do not range-check
their inputs: a prediction that leaves [0, 1] slightly is scored as it is, and images on another scale can be
scored by passing their ``data_range``. ``lpips``, ``torchvision`` and ``skimage`` are imported only inside the
functions that need them, so ``import invgen.metrics`` stays cheap.

Example:
    >>> import torch
    >>> from invgen import metrics
    >>> x = torch.rand(2, 3, 32, 32)
    >>> metrics.psnr(x, x.clamp(0.1, 0.9)).shape
    torch.Size([2])
"""

from __future__ import annotations

# The submodules are cheap (torch only; lpips, torchvision and skimage are imported inside the functions that need
# them). Importing them here binds the package attributes to the functions, not to the submodules of the same name.
from invgen.metrics.lpips import lpips, lpips_model
from invgen.metrics.posterior import coverage, credible_interval, data_consistency, diversity
from invgen.metrics.psnr import check_pair, psnr
from invgen.metrics.ssim import ssim

__all__ = [
    "check_pair",
    "coverage",
    "credible_interval",
    "data_consistency",
    "diversity",
    "lpips",
    "lpips_model",
    "psnr",
    "ssim",
]
