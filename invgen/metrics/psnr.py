"""Peak signal-to-noise ratio, per image, equal to ``skimage.metrics.peak_signal_noise_ratio``.

Also the input checks shared by the reference metrics (:func:`check_pair`): ``(B, C, H, W)`` pairs of the same shape
with values in ``[0, data_range]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invgen.checks import check_image, check_range
from invgen.errors import RangeError, ShapeError


def check_pair(
    x: object,
    ref: object,
    name_x: str = "x",
    name_ref: str = "ref",
    *,
    high: float | None = 1.0,
    who: str = "",
) -> tuple[Tensor, Tensor]:
    """Validate a prediction and its reference: finite ``(B, C, H, W)`` floating point tensors of the same shape,
    with values in ``[0, high]`` (within 1e-6).

    Args:
        x: the predictions.
        ref: the references (ground truths).
        name_x: how ``x`` is called in error messages.
        name_ref: how ``ref`` is called in error messages.
        high: the top of the value range (1 for images on the [0, 1] scale, a metric's ``data_range`` otherwise);
            None skips the range check.
        who: the metric, named in error messages.

    Returns:
        ``(x, ref)`` unchanged.

    Raises:
        ShapeError: if either is not 4-D or their shapes differ (the message gives both shapes).
        RangeError: if either holds NaN/Inf or values outside ``[0, high]`` (the message gives their min and max
            and how to fix the call: divide 0..255 images by 255, clamp samples that leave [0, 1]).

    Shape:
        x, ref: ``(B, C, H, W)``.
    """
    check_image(x, name_x)
    check_image(ref, name_ref)
    assert isinstance(x, Tensor) and isinstance(ref, Tensor)
    if x.shape != ref.shape:
        raise ShapeError(
            f"{name_x} and {name_ref} must have the same shape, got {name_x} {tuple(x.shape)} and "
            f"{name_ref} {tuple(ref.shape)}"
        )
    if high is not None:
        fix = (
            f"clamp predictions explicitly before scoring them, {name_x}.clamp(0, {high:g}), if they leave "
            f"[0, {high:g}] only slightly (solver samples may)"
        )
        if who in ("psnr", "ssim") and high == 1.0:
            fix += "; for images on another scale pass their data_range"
        check_range(x, name_x, high, who=who, fix=fix)
        check_range(ref, name_ref, high, who=who, fix=fix)
    return x, ref


def check_data_range(data_range: float) -> float:
    """Raise unless ``data_range`` is a finite number > 0; return it as a float."""
    value = float(data_range)
    if not value > 0 or value == float("inf"):
        raise RangeError(f"data_range: expected a finite value > 0, got {data_range}")
    return value


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, one value per image.

    The mean squared error is taken over the channels and pixels of each image, in float64, exactly as
    ``skimage.metrics.peak_signal_noise_ratio(ref[b], x[b], data_range=data_range)`` does. Inputs are not clamped:
    values outside ``[0, data_range]`` (beyond 1e-6) raise, e.g. 0..255 images scored with the default
    ``data_range=1``; clamp solver samples first.

    Args:
        x: predictions.
        ref: references (ground truths).
        data_range: the distance between the smallest and largest possible value (1.0 for images in [0, 1]);
            both images must lie in ``[0, data_range]``.

    Returns:
        The PSNR of each image in dB, in ``x``'s dtype. Identical images give ``inf``.

    Raises:
        ShapeError: if the shapes differ or are not ``(B, C, H, W)``.
        RangeError: for NaN/Inf, values outside ``[0, data_range]`` or a ``data_range`` that is not > 0.

    Shape:
        x, ref: ``(B, C, H, W)`` -> ``(B,)``.

    Example:
        >>> x = torch.full((1, 1, 4, 4), 0.5)
        >>> psnr(x + 0.1, x)
        tensor([20.0000])
    """
    r = check_data_range(data_range)
    check_pair(x, ref, high=r, who="psnr")
    diff = x.to(torch.float64) - ref.to(device=x.device, dtype=torch.float64)
    mse = diff.pow(2).reshape(diff.shape[0], -1).mean(dim=1)
    out = 10.0 * torch.log10(r**2 / mse)  # mse == 0 gives +inf, as in skimage (without its divide warning)
    return out.to(x.dtype)
