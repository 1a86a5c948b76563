"""Sketch-to-image: a differentiable soft edge map (the operator) and a binary Canny sketch (for building data)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invgen.checks import check_image
from invgen.errors import RangeError
from invgen.operators.base import Operator
from invgen.operators.color import LUMA_601
from invgen.operators.noise import NoiseModel


def _gray(x: Tensor, name: str = "x") -> Tensor:
    """Luma (ITU-R BT.601) of an RGB batch, or the single channel of a gray one: ``(B, 1, H, W)``."""
    check_image(x, name, channels=(1, 3))
    if x.shape[1] == 1:
        return x
    c = torch.tensor(LUMA_601, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    return (x * c).sum(dim=1, keepdim=True)


class Sketch(Operator):
    """A soft edge map: ``sigmoid((g / max g - threshold) / temperature)`` with ``g`` the Sobel gradient magnitude.

    The gray image (BT.601 luma for RGB) is differentiated with Sobel filters (``kornia.filters.spatial_gradient``,
    replicated borders), the magnitude ``g = sqrt(gx^2 + gy^2 + eps^2)`` is divided by its per-image maximum
    (plus ``eps``) and soft-thresholded. Every step is differentiable, so gradient-based solvers (DPS, MAP) can use
    the operator; it is not linear.

    Args:
        threshold: the normalised gradient magnitude at which the map crosses 0.5.
        channels: the input's channel count, 1 or 3; default None accepts both, and ``input_shape`` (used by
            ``invgen.solve`` to match a prior) then assumes gray images: pass ``channels=3`` for RGB priors.
        temperature: the softness of the threshold (smaller is sharper).
        eps: regulariser of the magnitude and of the normalisation.
        noise: the observation noise model.

    Shape:
        x: ``(B, 1 or 3, H, W)``; y: ``(B, 1, H, W)`` in (0, 1).

    Example:
        >>> Sketch()(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """

    name = "sketch"
    linear = False

    def __init__(
        self,
        threshold: float = 0.2,
        temperature: float = 0.05,
        eps: float = 1e-6,
        channels: int | None = None,
        noise: NoiseModel | None = None,
    ) -> None:
        super().__init__(noise)
        threshold, temperature, eps = float(threshold), float(temperature), float(eps)
        if not (math.isfinite(threshold) and temperature > 0 and math.isfinite(temperature) and eps > 0):
            raise RangeError(
                f"sketch: expected a finite threshold, temperature > 0 and eps > 0, got {threshold}, {temperature}, "
                f"{eps}"
            )
        if channels not in (None, 1, 3):
            raise ValueError(f"sketch: channels must be 1, 3 or None, got {channels!r}")
        self.threshold, self.temperature, self.eps, self.channels = threshold, temperature, eps, channels
        self._config = {"threshold": threshold, "temperature": temperature}
        if eps != 1e-6:
            self._config["eps"] = eps
        if channels is not None:
            self._config["channels"] = channels

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        return check_image(x, name, channels=self.channels or (1, 3), clean=clean)

    def edges(self, x: Tensor) -> Tensor:
        """The normalised Sobel magnitude ``g / (max g + eps)`` in [0, 1).

        Shape: ``(B, C, H, W)`` -> ``(B, 1, H, W)``.
        """
        from kornia.filters import spatial_gradient

        self.check_input(x, "x")
        grad = spatial_gradient(_gray(x), mode="sobel", order=1, normalized=True)  # (B, 1, 2, H, W)
        mag = torch.sqrt(grad[:, :, 0] ** 2 + grad[:, :, 1] ** 2 + self.eps**2)
        return mag / (mag.amax(dim=(1, 2, 3), keepdim=True) + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid((self.edges(x) - self.threshold) / self.temperature)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (x_shape[0], 1, *tuple(x_shape[2:]))

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(B, channels, H, W)``; gray (``C = 1``) unless ``channels`` was given."""
        return (y_shape[0], self.channels or 1, *tuple(y_shape[2:]))


def make_sketch(x: Tensor, low: float = 0.1, high: float = 0.2, sigma: float = 1.0) -> Tensor:
    """A binary sketch of clean images: Canny edges (``kornia.filters.canny``) of the gray image.

    Args:
        x: clean images in [0, 1].
        low: the hysteresis low threshold on the gradient magnitude.
        high: the hysteresis high threshold.
        sigma: the standard deviation of the Gaussian smoothing (kernel size ``2 * ceil(3 sigma) + 1``, >= 3).

    Returns:
        ``(B, 1, H, W)`` tensor of ``x``'s dtype with values in {0, 1} (1 = edge).

    Shape:
        x: ``(B, 1 or 3, H, W)``.

    Example:
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
        >>> s = make_sketch(x)
        >>> bool(s[0, 0, 16, 16]), bool(s[0, 0, 16, 8] or s[0, 0, 16, 7])
        (False, True)
    """
    from kornia.filters import canny

    check_image(x, "x", channels=(1, 3), clean=True)
    if not 0 <= low <= high:
        raise RangeError(f"make_sketch: expected 0 <= low <= high, got low={low}, high={high}")
    if not sigma > 0:
        raise RangeError(f"make_sketch: expected sigma > 0, got {sigma}")
    size = max(3, 2 * math.ceil(3 * sigma) + 1)
    with torch.no_grad():
        _, edges = canny(_gray(x), low_threshold=low, high_threshold=high, kernel_size=size, sigma=(sigma, sigma))
    return (edges > 0).to(x.dtype)
