"""Structural similarity (SSIM), per image, equal to ``skimage.metrics.structural_similarity``.

The local statistics use the same filters as scikit-image: a ``win_size x win_size`` uniform window
(``scipy.ndimage.uniform_filter``) or a Gaussian of standard deviation ``sigma`` truncated at 3.5 sigma
(``skimage.filters.gaussian``), both with half-sample symmetric ("reflect") borders; then a strip of
``(win_size - 1) // 2`` pixels is cropped on every side before the SSIM map is averaged. Colour images are scored
per channel and the channel values averaged, as ``structural_similarity(..., channel_axis=...)`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.errors import RangeError, ShapeError
from invgen.metrics.psnr import check_data_range, check_pair

_TRUNCATE = 3.5  # skimage's truncation of the Gaussian window, in units of sigma


def _symmetric_pad(x: Tensor, r: int) -> Tensor:
    """Pad the last two dims by ``r`` with half-sample symmetric borders (``d c b a | a b c d | d c b a``).

    This is scipy.ndimage's ``mode="reflect"``; it works for any ``r``, also one larger than the image.
    """

    def index(n: int) -> Tensor:
        i = torch.arange(-r, n + r, device=x.device) % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)

    return x.index_select(-2, index(x.shape[-2])).index_select(-1, index(x.shape[-1]))


def _window(win_size: int, gaussian_weights: bool, sigma: float) -> Tensor:
    """The normalised 1-D filter taps, float64."""
    if not gaussian_weights:
        return torch.full((win_size,), 1.0 / win_size, dtype=torch.float64)
    radius = int(_TRUNCATE * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _filter(maps: Tensor, taps: Tensor) -> Tensor:
    """Separable depthwise filtering of ``(B, K, H, W)`` maps with symmetric borders, same size out."""
    k = maps.shape[1]
    r = (taps.numel() - 1) // 2
    taps = taps.to(maps.device)
    padded = _symmetric_pad(maps, r)
    out = F.conv2d(padded, taps.reshape(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)
    return F.conv2d(out, taps.reshape(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)


def ssim(
    x: Tensor,
    ref: Tensor,
    data_range: float = 1.0,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,
    K2: float = 0.03,
) -> Tensor:
    """Mean structural similarity of each image, as ``skimage.metrics.structural_similarity``.

    The defaults are scikit-image's (7x7 uniform window, sample covariance). The setting of Wang et al. (2004) is
    ``gaussian_weights=True, use_sample_covariance=False`` (an 11-tap Gaussian window of ``sigma=1.5``). Inputs are
    not clamped: values outside ``[0, data_range]`` (beyond 1e-6) raise; clamp solver samples first. Computations run
    in float64.

    Args:
        x: predictions.
        ref: references (ground truths).
        data_range: the distance between the smallest and largest possible value (1.0 for images in [0, 1]);
            both images must lie in ``[0, data_range]``.
        win_size: odd side of the window, which also sets the border crop ``(win_size - 1) // 2``. None gives
            scikit-image's default: 7 for the uniform window, ``2 * int(3.5 * sigma + 0.5) + 1`` (11 for
            ``sigma=1.5``) for the Gaussian one. The Gaussian taps depend on ``sigma`` only, as in scikit-image.
        gaussian_weights: weigh the window with a Gaussian instead of uniformly.
        sigma: standard deviation of the Gaussian window.
        use_sample_covariance: normalise (co)variances by ``NP - 1`` instead of ``NP`` (``NP = win_size ** 2``).
        K1: the constant of the luminance term, ``C1 = (K1 * data_range) ** 2``.
        K2: the constant of the contrast term, ``C2 = (K2 * data_range) ** 2``.

    Returns:
        The SSIM of each image (mean over channels of the mean over the cropped SSIM map), in ``x``'s dtype;
        1 for identical images.

    Raises:
        ShapeError: if the shapes differ or an image side is smaller than ``win_size``.
        RangeError: for an even or non-positive ``win_size``, negative ``sigma``, ``K1`` or ``K2``, NaN/Inf or values
            outside ``[0, data_range]``.

    Shape:
        x, ref: ``(B, C, H, W)`` -> ``(B,)``.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> ssim(x, x)
        tensor([1., 1.])
    """
    r = check_data_range(data_range)
    check_pair(x, ref, high=r, who="ssim")
    if K1 < 0 or K2 < 0 or sigma < 0:
        raise RangeError(f"ssim: K1, K2 and sigma must be >= 0, got K1={K1}, K2={K2}, sigma={sigma}")
    if win_size is None:
        win_size = 2 * int(_TRUNCATE * sigma + 0.5) + 1 if gaussian_weights else 7
    if win_size < 1 or win_size % 2 != 1:
        raise RangeError(f"ssim: win_size must be a positive odd integer, got {win_size}")
    c, h, w = x.shape[1:]
    if h < win_size or w < win_size:
        raise ShapeError(
            f"ssim: images of spatial size {(h, w)} are smaller than the {win_size}x{win_size} window; "
            "pass a smaller odd win_size"
        )

    x64 = x.to(torch.float64)
    y64 = ref.to(device=x.device, dtype=torch.float64)
    maps = torch.cat([x64, y64, x64 * x64, y64 * y64, x64 * y64], dim=1)  # (B, 5C, H, W)
    filtered = _filter(maps, _window(win_size, gaussian_weights, sigma))
    ux, uy, uxx, uyy, uxy = filtered.split(c, dim=1)

    cov_norm = win_size**2 / (win_size**2 - 1) if use_sample_covariance and win_size > 1 else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * r) ** 2
    c2 = (K2 * r) ** 2
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))

    pad = (win_size - 1) // 2
    s_map = s_map[..., pad : h - pad, pad : w - pad]
    return s_map.mean(dim=(1, 2, 3)).to(x.dtype)
