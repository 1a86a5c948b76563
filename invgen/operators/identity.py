"""Identity operator: denoising, A = I."""

from __future__ import annotations

from torch import Tensor

from invgen.checks import check_image
from invgen.operators.base import LinearOperator
from invgen.operators.noise import NoiseModel


class Identity(LinearOperator):
    """``A(x) = x``; with Gaussian noise the problem is denoising.

    Shape:
        x, y: ``(B, C, H, W)``; spectral coordinates are the image itself with singular values 1.
    """

    name = "identity"
    has_svd = True

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, "x")
        return x

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def pinv(self, y: Tensor) -> Tensor:
        return y

    def svd_vt(self, x: Tensor) -> Tensor:
        return x

    def svd_v(self, z: Tensor) -> Tensor:
        return z

    def svd_ut(self, y: Tensor) -> Tensor:
        return y

    def svd_u(self, z: Tensor) -> Tensor:
        return z

    def singulars(self, z: Tensor) -> Tensor:
        return z.new_ones((1,) * z.dim())
