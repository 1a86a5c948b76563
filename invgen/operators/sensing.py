"""Compressed sensing: ``y = G x / sqrt(m)`` with a seeded standard Gaussian matrix ``G`` of ``m x d``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import ShapeError
from invgen.operators.base import LinearOperator, check_bound_input
from invgen.operators.noise import NoiseModel


class Sensing(LinearOperator):
    """``A = G / sqrt(m)`` acting on flattened images, ``G`` an ``m x d`` standard Gaussian matrix (``d = C H W``).

    ``G`` is drawn from ``torch.Generator().manual_seed(seed)`` in float64, so a config rebuilds the same matrix.
    Without ``shape`` the matrix is built at the first ``forward`` and the input shape is remembered; later inputs
    must have the same ``(C, H, W)``.

    The SVD ``A = U diag(s) V^T`` (float64, computed once on demand with full ``U`` and ``V``: ``d x d`` memory)
    gives spectral coordinates of shape ``(B, d)``: ``svd_vt(x) = V^T x``, singular values ``(1, d)`` holding the
    ``r = min(m, d)`` singular values followed by zeros, ``svd_ut(y)`` the first ``r`` entries of ``U^T y``
    padded with zeros to ``d``. ``m > d`` is allowed: the ``m - d`` directions of ``U`` outside the range of ``A``
    have no spectral coordinate (their part of ``y`` is pure noise, dropped by ``svd_ut`` and by ``pinv``).

    Args:
        m: the number of measurements.
        seed: seed of ``G``.
        shape: the input shape ``(C, H, W)``; default: that of the first input.
        noise: the observation noise model.

    Shape:
        x: ``(B, C, H, W)``; y: ``(B, m)``; spectral coordinates ``(B, d)``.

    Example:
        >>> op = Sensing(20, seed=0)
        >>> op(torch.rand(2, 1, 6, 6)).shape
        torch.Size([2, 20])
    """

    name = "sensing"
    has_svd = True

    def __init__(
        self,
        m: int,
        *,
        seed: int = 0,
        shape: tuple[int, int, int] | None = None,
        noise: NoiseModel | None = None,
    ) -> None:
        super().__init__(noise)
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"sensing: m (the number of measurements) must be an integer >= 1, got {m!r}")
        self.m = m
        self.seed = int(seed)
        self.shape: tuple[int, int, int] | None = None
        self._a64: Tensor | None = None
        self._svd64: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._cast: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self._config: dict[str, Any] = {"m": m, "seed": self.seed}
        if shape is not None:
            self._set_shape(tuple(int(v) for v in shape))

    # -- the matrix ---------------------------------------------------------------------------------------------
    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or min(shape) < 1:
            raise ShapeError(f"sensing: shape must be (C, H, W) of positive ints, got {shape}")
        self.shape = (shape[0], shape[1], shape[2])
        self._config["shape"] = self.shape

    @property
    def d(self) -> int:
        """The input dimension ``C * H * W`` (once the shape is known)."""
        return math.prod(self._known_shape())

    def _known_shape(self) -> tuple[int, int, int]:
        if self.shape is None:
            raise ShapeError(
                "sensing: the input shape is not known yet; pass shape=(C, H, W) or apply the operator to an image "
                "first"
            )
        return self.shape

    def matrix(self) -> Tensor:
        """``A = G / sqrt(m)``, float64 ``(m, d)``."""
        if self._a64 is None:
            g = torch.Generator().manual_seed(self.seed)
            self._a64 = torch.randn((self.m, self.d), generator=g, dtype=torch.float64) / math.sqrt(self.m)
        return self._a64

    def _svd(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(U (m, m), s (d,) zero-padded, V (d, d), A^+ (d, m))`` in float64."""
        if self._svd64 is None:
            a = self.matrix()
            u, s, vh = torch.linalg.svd(a, full_matrices=True)
            tol = s.max() * max(a.shape) * torch.finfo(torch.float64).eps
            s = torch.where(s > tol, s, torch.zeros_like(s))
            r = s.numel()
            s_inv = torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(s))
            pinv = vh[:r].T @ (s_inv[:, None] * u[:, :r].T)
            s_pad = torch.zeros(self.d, dtype=torch.float64)
            s_pad[:r] = s
            self._svd64 = (u, s_pad, vh.T.contiguous(), pinv)
        return self._svd64

    def _get(self, which: str, like: Tensor) -> Tensor:
        key = (which, like.dtype, like.device)
        if key not in self._cast:
            t = self.matrix() if which == "a" else self._svd()[("u", "s", "v", "pinv").index(which)]
            self._cast[key] = t.to(device=like.device, dtype=like.dtype)
        return self._cast[key]

    # -- shapes and checks ----------------------------------------------------------------------------------------
    def bind_shape(self, x_shape: tuple[int, ...]) -> Sensing:
        shape = tuple(int(v) for v in x_shape)
        if self.shape is None:
            self._set_shape(shape)
        elif shape != self.shape:
            raise ShapeError(f"sensing: the operator was built for inputs {self.shape}, cannot bind it to {shape}")
        return self

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        return check_bound_input("sensing", self.shape, x, name, clean)

    def _check_y(self, y: Tensor, name: str = "y") -> Tensor:
        check_tensor(y, name)
        if y.dim() != 2 or y.shape[1] != self.m:
            raise ShapeError(f"sensing: {name}: expected observations of shape (B, {self.m}), got {tuple(y.shape)}")
        return y

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(x_shape[0]), self.m)

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(y_shape) != 2:
            raise ShapeError(f"sensing: expected an observation shape (B, {self.m}), got {tuple(y_shape)}")
        return (int(y_shape[0]), *self._known_shape())

    # -- the operator ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, "x")
        if self.shape is None:
            self._set_shape(tuple(x.shape[1:]))
        return x.reshape(x.shape[0], -1) @ self._get("a", x).T

    def adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return (y @ self._get("a", y)).reshape(self.input_shape(tuple(y.shape)))

    def pinv(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return (y @ self._get("pinv", y).T).reshape(self.input_shape(tuple(y.shape)))

    def svd_vt(self, x: Tensor) -> Tensor:
        self.check_input(x, "x")
        return x.reshape(x.shape[0], -1) @ self._get("v", x)

    def svd_v(self, z: Tensor) -> Tensor:
        return (z @ self._get("v", z).T).reshape(z.shape[0], *self._known_shape())

    def svd_ut(self, y: Tensor) -> Tensor:
        self._check_y(y)
        r = min(self.m, self.d)
        z = y.new_zeros((y.shape[0], self.d))
        z[:, :r] = (y @ self._get("u", y))[:, :r]
        return z

    def svd_u(self, z: Tensor) -> Tensor:
        r = min(self.m, self.d)
        return z[:, :r] @ self._get("u", z)[:, :r].T

    def singulars(self, z: Tensor) -> Tensor:
        return self._get("s", z)[None]
