"""Super-resolution: downsampling by an integer scale with a block-average or antialiased bicubic kernel.

Both kernels are separable, ``Y = W_h X W_w^T`` per channel, so the operator inherits exact closed-form adjoint,
pseudo-inverse and SVD from :class:`invgen.operators.separable.Separable`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from invgen.errors import ShapeError
from invgen.operators.noise import NoiseModel
from invgen.operators.separable import Separable

SR_KERNELS = ("block", "bicubic")


def block_matrix(n: int, scale: int) -> Tensor:
    """``(n / scale, n)`` float64 matrix averaging consecutive blocks of ``scale`` samples."""
    m = np.zeros((n // scale, n))
    for i in range(n // scale):
        m[i, i * scale : (i + 1) * scale] = 1.0 / scale
    return torch.from_numpy(m)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def bicubic_matrix(n: int, scale: int) -> Tensor:
    """``(n / scale, n)`` float64 matrix of MATLAB ``imresize(x, 1/scale, 'bicubic')`` along one axis.

    For downscaling MATLAB antialiases: the cubic kernel is widened by the scale (``h(t) = cubic(t / s) / s``, a
    support of ``4 s`` input samples), each output sample's weights are normalised to sum 1, and samples beyond the
    border are mirrored (symmetric padding, the edge sample repeated).
    """
    out = n // scale
    width = 4.0 * scale
    x = np.arange(1, out + 1, dtype=np.float64)
    u = x * scale + 0.5 * (1 - scale)  # the output sample's centre in 1-based input coordinates
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    weights = _cubic((u[:, None] - idx) / scale) / scale
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n)]
    m = np.zeros((out, n))
    np.add.at(m, (np.repeat(np.arange(out), taps), cols.ravel()), weights.ravel())
    return torch.from_numpy(m)


class SuperResolution(Separable):
    """Downsampling by an integer ``scale``: ``y = W_h x W_w^T`` per channel.

    Args:
        scale: the integer downsampling factor (>= 2); H and W must be multiples of it.
        kernel: ``"block"`` (default: average of ``scale x scale`` blocks) or ``"bicubic"`` (antialiased bicubic as
            MATLAB's ``imresize`` downscales: the LR images of the SR benchmarks).
        noise: the observation noise model.

    Shape:
        x: ``(B, C, H, W)``; y: ``(B, C, H / scale, W / scale)``; spectral coordinates ``(B, C, H, W)`` with
        singular values ``(1, 1, H, W)`` (zero outside the top-left ``(H / scale, W / scale)`` corner).

    Example:
        >>> op = SuperResolution(4, kernel="bicubic")
        >>> op(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 8, 8])
    """

    name = "superres"

    def __init__(self, scale: int = 4, kernel: str = "block", noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
            raise ValueError(f"superres: scale must be an integer >= 2, got {scale!r}")
        if kernel not in SR_KERNELS:
            raise ValueError(f"superres: kernel must be one of {', '.join(SR_KERNELS)}, got {kernel!r}")
        self.scale = int(scale)
        self.kernel = kernel
        self._config = {"scale": self.scale, "kernel": kernel}

    def axis_matrix(self, n: int) -> Tensor:
        return (block_matrix if self.kernel == "block" else bicubic_matrix)(n, self.scale)

    def check_size(self, x: Tensor, name: str) -> None:
        h, w = x.shape[-2:]
        s = self.scale
        if h % s or w % s:
            raise ShapeError(
                f"superres: {name} has size {h}x{w}, which is not divisible by the scale {s}; crop it to "
                f"{h - h % s}x{w - w % s} (x[..., :{h - h % s}, :{w - w % s}])"
            )

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w = x_shape[-2:]
        if h % self.scale or w % self.scale:
            raise ShapeError(f"superres: size {h}x{w} is not divisible by the scale {self.scale}")
        return (*tuple(x_shape[:-2]), h // self.scale, w // self.scale)

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*tuple(y_shape[:-2]), y_shape[-2] * self.scale, y_shape[-1] * self.scale)
