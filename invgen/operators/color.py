"""Colorization: the observation is the ITU-R BT.601 luma of an RGB image."""

from __future__ import annotations

import torch
from torch import Tensor

from invgen.checks import check_image
from invgen.operators.base import LinearOperator
from invgen.operators.noise import NoiseModel

LUMA_601 = (0.299, 0.587, 0.114)


def _basis() -> Tensor:
    """A fixed orthonormal 3x3 basis (columns) whose first column is ``c / |c|``, ``c`` the luma weights."""
    c = torch.tensor(LUMA_601, dtype=torch.float64)
    m = torch.eye(3, dtype=torch.float64)
    m[:, 0] = c  # columns c, e_2, e_3: independent since c_1 != 0
    q, _ = torch.linalg.qr(m)
    return q * torch.sign(q[0, 0])  # make the first column +c/|c| (the other columns' signs are a free choice)


class Colorize(LinearOperator):
    """``y = 0.299 R + 0.587 G + 0.114 B`` per pixel (ITU-R BT.601 luma, as PIL's ``convert("L")``).

    Shape:
        x: ``(B, 3, H, W)``; y: ``(B, 1, H, W)``; spectral coordinates ``(B, 3, H, W)`` (per pixel ``V^T x`` with
        ``V`` orthonormal, first column ``c / |c|``), singular values ``(1, 3, 1, 1) = [|c|, 0, 0]``.

    Example:
        >>> Colorize()(torch.ones(1, 3, 4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """

    name = "colorize"
    has_svd = True

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        self._c = torch.tensor(LUMA_601, dtype=torch.float64)
        self._v = _basis()
        self._config = {}

    def _weights(self, like: Tensor) -> Tensor:
        return self._c.to(device=like.device, dtype=like.dtype).reshape(1, 3, 1, 1)

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        return check_image(x, name, channels=3, clean=clean)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, "x")
        return (x * self._weights(x)).sum(dim=1, keepdim=True)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (x_shape[0], 1, *tuple(x_shape[2:]))

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (y_shape[0], 3, *tuple(y_shape[2:]))

    def adjoint(self, y: Tensor) -> Tensor:
        check_image(y, "y", channels=1)
        return y * self._weights(y)

    def pinv(self, y: Tensor) -> Tensor:
        check_image(y, "y", channels=1)
        c = self._weights(y)
        return y * c / (c**2).sum()

    def svd_vt(self, x: Tensor) -> Tensor:
        v = self._v.to(device=x.device, dtype=x.dtype)
        return torch.einsum("jk,bjhw->bkhw", v, x)

    def svd_v(self, z: Tensor) -> Tensor:
        v = self._v.to(device=z.device, dtype=z.dtype)
        return torch.einsum("jk,bkhw->bjhw", v, z)

    def svd_ut(self, y: Tensor) -> Tensor:
        return torch.cat([y, y.new_zeros((y.shape[0], 2, *y.shape[2:]))], dim=1)

    def svd_u(self, z: Tensor) -> Tensor:
        return z[:, :1]

    def singulars(self, z: Tensor) -> Tensor:
        s = z.new_zeros((1, 3, 1, 1))
        s[0, 0] = float(self._c.norm())
        return s
