"""Separable linear operators ``Y = W_h X W_w^T`` (per channel) with exact closed-form algebra.

A subclass provides the 1-D matrix of each axis (:meth:`Separable.axis_matrix`, float64); this module caches it per
length together with its SVD ``W = U diag(s) V^T`` and pseudo-inverse, and derives the adjoint, the pseudo-inverse
and the SVD of the 2-D operator from the Kronecker structure ``A = W_h (x) W_w``:

* adjoint ``W_h^T Y W_w``; pseudo-inverse ``W_h^+ Y (W_w^+)^T`` (the pseudo-inverse of a Kronecker product is the
  Kronecker product of the pseudo-inverses);
* spectral coordinates ``Z = V_h^T X V_w``, shape ``(B, C, H, W)``; singular values ``outer(s_h, s_w)`` padded with
  zeros to ``(1, 1, H, W)``; ``svd_ut(Y) = U_h^T Y U_w`` placed in the top-left ``(h, w)`` corner of a zero
  ``(B, C, H, W)`` tensor and ``svd_u(Z) = U_h Z[:h, :w] U_w^T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invgen.checks import check_image
from invgen.operators.base import LinearOperator
from invgen.operators.noise import NoiseModel


@dataclass(frozen=True)
class AxisAlgebra:
    """The 1-D matrix of one axis and its algebra: ``w = u diag(s) v^T`` (full ``u`` and ``v``), ``p = w^+``."""

    w: Tensor  # (m, n)
    u: Tensor  # (m, m)
    s: Tensor  # (n,): the singular values, zero-padded from min(m, n) to n
    v: Tensor  # (n, n)
    p: Tensor  # (n, m)

    def to(self, like: Tensor) -> AxisAlgebra:
        kw = {"dtype": like.dtype, "device": like.device}
        return AxisAlgebra(self.w.to(**kw), self.u.to(**kw), self.s.to(**kw), self.v.to(**kw), self.p.to(**kw))


def axis_algebra(w: Tensor) -> AxisAlgebra:
    """Build the SVD and pseudo-inverse of a float64 ``(m, n)`` axis matrix (``m <= n``)."""
    w = w.to(torch.float64)
    m, n = w.shape
    u, s, vh = torch.linalg.svd(w, full_matrices=True)
    tol = s.max() * max(m, n) * torch.finfo(torch.float64).eps if s.numel() else 0.0
    s_inv = torch.where(s > tol, 1.0 / s.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(s))
    r = s.numel()
    p = vh[:r].T @ (s_inv[:, None] * u[:, :r].T)
    s_pad = torch.zeros(n, dtype=torch.float64)
    s_pad[:r] = torch.where(s > tol, s, torch.zeros_like(s))
    return AxisAlgebra(w, u, s_pad, vh.T.contiguous(), p)


class Separable(LinearOperator):
    """Base of separable operators: subclasses implement :meth:`axis_matrix`, ``output_shape`` and ``input_shape``.

    Shape:
        x: ``(B, C, H, W)``; y: ``(B, C, h, w)`` with ``(h, w)`` the row counts of the axis matrices; spectral
        coordinates ``(B, C, H, W)``.
    """

    has_svd = True

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__(noise)
        self._w64: dict[int, Tensor] = {}
        self._w: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
        self._axes64: dict[int, AxisAlgebra] = {}
        self._axes: dict[tuple[int, torch.dtype, torch.device], AxisAlgebra] = {}

    def axis_matrix(self, n: int) -> Tensor:  # pragma: no cover - abstract
        """The float64 ``(m, n)`` matrix acting along an axis of length ``n``."""
        raise NotImplementedError

    def check_size(self, x: Tensor, name: str) -> None:
        """Raise if the input size does not suit the operator (subclasses)."""

    def _matrix(self, n: int, like: Tensor) -> Tensor:
        """The axis matrix for length ``n`` on ``like``'s device and dtype (built once in float64, then cached)."""
        key = (n, like.dtype, like.device)
        if key not in self._w:
            if n not in self._w64:
                self._w64[n] = self.axis_matrix(n).to(torch.float64)
            self._w[key] = self._w64[n].to(device=like.device, dtype=like.dtype)
        return self._w[key]

    def _matrices(self, x_shape: tuple[int, ...], like: Tensor) -> tuple[Tensor, Tensor]:
        return self._matrix(int(x_shape[-2]), like), self._matrix(int(x_shape[-1]), like)

    def _axis(self, n: int, like: Tensor) -> AxisAlgebra:
        """The SVD and pseudo-inverse of an axis matrix (computed on first use by ``pinv`` or the SVD methods)."""
        key = (n, like.dtype, like.device)
        if key not in self._axes:
            if n not in self._axes64:
                self._matrix(n, like)
                self._axes64[n] = axis_algebra(self._w64[n])
            self._axes[key] = self._axes64[n].to(like)
        return self._axes[key]

    def _algebras(self, x_shape: tuple[int, ...], like: Tensor) -> tuple[AxisAlgebra, AxisAlgebra]:
        return self._axis(int(x_shape[-2]), like), self._axis(int(x_shape[-1]), like)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, "x")
        self.check_size(x, "x")
        wh, ww = self._matrices(tuple(x.shape), x)
        return wh @ x @ ww.T

    def adjoint(self, y: Tensor) -> Tensor:
        check_image(y, "y")
        wh, ww = self._matrices(self.input_shape(tuple(y.shape)), y)
        return wh.T @ y @ ww

    def pinv(self, y: Tensor) -> Tensor:
        check_image(y, "y")
        ah, aw = self._algebras(self.input_shape(tuple(y.shape)), y)
        return ah.p @ y @ aw.p.T

    def svd_vt(self, x: Tensor) -> Tensor:
        ah, aw = self._algebras(tuple(x.shape), x)
        return ah.v.T @ x @ aw.v

    def svd_v(self, z: Tensor) -> Tensor:
        ah, aw = self._algebras(tuple(z.shape), z)
        return ah.v @ z @ aw.v.T

    def svd_ut(self, y: Tensor) -> Tensor:
        x_shape = self.input_shape(tuple(y.shape))
        ah, aw = self._algebras(x_shape, y)
        h, w = y.shape[-2:]
        z = y.new_zeros(x_shape)
        z[..., :h, :w] = ah.u.T @ y @ aw.u
        return z

    def svd_u(self, z: Tensor) -> Tensor:
        ah, aw = self._algebras(tuple(z.shape), z)
        h, w = ah.u.shape[0], aw.u.shape[0]
        return ah.u @ z[..., :h, :w] @ aw.u.T

    def singulars(self, z: Tensor) -> Tensor:
        ah, aw = self._algebras(tuple(z.shape), z)
        return (ah.s[:, None] * aw.s[None, :])[None, None]
