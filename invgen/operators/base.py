"""Operator and LinearOperator: the forward model A and its algebra.

An operator maps a batch of images ``x`` of shape ``(B, C, H, W)`` to observations ``y`` (an image batch for most
operators, ``(B, m)`` for compressed sensing) and carries its noise model. Operators follow the device and dtype of
their input, are differentiable, and treat a batch of ``k * B`` items as ``k`` stacked copies when their own
parameters (masks, kernels) were given per item for ``B`` items, which is how solvers batch posterior samples.

A :class:`LinearOperator` adds ``adjoint`` and ``pinv`` (closed form where one exists, conjugate gradients
otherwise) and, where cheap, an SVD ``A = U diag(s) V^T`` expressed in *spectral coordinates*: ``svd_vt(x)`` and
``svd_ut(y)`` return tensors of one operator-defined shape ``z``; ``singulars(z)`` is broadcastable to it and holds
zeros on the null space of A, so ``A x = svd_u(s * svd_vt(x))``, ``A^T y = svd_v(s * svd_ut(y))`` and
``A^+ y = svd_v(s^+ * svd_ut(y))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_image, check_tensor
from invgen.errors import ShapeError
from invgen.operators.noise import GaussianNoise, NoiseModel


def match_batch(param: Tensor, like: Tensor) -> Tensor:
    """Move ``param`` to ``like``'s device/dtype and repeat its batch dimension to ``like``'s.

    ``param`` has batch 1 (shared), ``B`` (per item) or divides the batch of ``like`` (``k`` stacked copies).
    """
    param = param.to(device=like.device, dtype=like.dtype)
    pb, b = param.shape[0], like.shape[0]
    if pb in (1, b):
        return param
    if b % pb:
        raise ShapeError(
            f"operator parameters were given for a batch of {pb}, which does not divide the input batch of {b}"
        )
    return param.repeat(b // pb, *([1] * (param.dim() - 1)))


def check_bound_input(who: str, shape: tuple[int, ...] | None, x: Tensor, name: str, clean: bool) -> Tensor:
    """``check_image`` plus, for an operator bound to one input shape ``(C, H, W)``, that ``x`` has it."""
    check_image(x, name, clean=clean)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        dims = ", ".join(map(str, shape))
        raise ShapeError(f"{who}: {name}: expected images of shape (B, {dims}), got {tuple(x.shape)}")
    return x


class Operator(torch.nn.Module):
    """A (possibly nonlinear) forward operator ``y = A(x)`` with a noise model.

    Args:
        noise: the noise model of observations; defaults to noiseless ``GaussianNoise(0)``.

    Shape:
        x: ``(B, C, H, W)``; y: operator-defined (``output_shape``).
    """

    name: str = "operator"
    linear: bool = False

    def __init__(self, noise: NoiseModel | None = None) -> None:
        super().__init__()
        if noise is not None and not isinstance(noise, NoiseModel):
            raise TypeError(f"noise: expected an invgen noise model (invgen.noise(...)), got {type(noise).__name__}")
        self.noise: NoiseModel = noise if noise is not None else GaussianNoise(0.0)
        self._config: dict[str, Any] = {}

    # -- to be provided by subclasses -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``A(x)`` for an input of shape ``x_shape``."""
        with torch.no_grad():
            return tuple(self.forward(torch.zeros(x_shape)).shape)

    def input_shape(self, y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``x`` that produces observations of shape ``y_shape`` (default: the same shape)."""
        return tuple(y_shape)

    def bind_shape(self, x_shape: tuple[int, ...]) -> Operator:
        """Tell the operator the shape ``(C, H, W)`` of the images it will see, before it is applied to any.

        Operators whose definition depends on the input shape (``sensing``: its matrix is ``m x C*H*W``) fix it here,
        so observations can be solved by a freshly built operator (the benchmark runner does this); they raise if a
        different shape was fixed before. Others accept any shape and do nothing. Returns ``self``.
        """
        return self

    def check_input(self, x: Tensor, name: str = "x", clean: bool = False) -> Tensor:
        """Validate an input image batch (subclasses add channel and size rules)."""
        return check_image(x, name, clean=clean)

    # -- shared behaviour -------------------------------------------------------------------------------------
    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A noisy observation ``y ~ p(y | x)`` of a clean image batch ``x`` in [0, 1].

        Shape: x ``(B, C, H, W)`` -> y ``output_shape(x.shape)``.
        """
        self.check_input(x, "x", clean=True)
        return self.noise.sample(self.forward(x), generator=generator)

    def check_observation(self, y: Tensor, name: str = "y") -> Tensor:
        """Validate an observation: finite, and consistent with the operator's output shape."""
        check_tensor(y, name)
        x_shape = self.input_shape(tuple(y.shape))
        if len(x_shape) != 4:
            raise ShapeError(
                f"{name}: expected an observation of {self.name} of a (B, C, H, W) image batch, got "
                f"shape {tuple(y.shape)}"
            )
        expected = self.output_shape(x_shape)
        if tuple(y.shape) != tuple(expected):
            raise ShapeError(
                f"{name}: expected an observation of shape {expected} for {self.name}, got {tuple(y.shape)}"
            )
        return y

    def log_likelihood(self, y: Tensor, x: Tensor) -> Tensor:
        """``log p(y | x)`` per item, ``(B,)``: the noise model evaluated at ``A(x)``."""
        return self.noise.log_likelihood(y, self.forward(x))

    def config(self) -> dict[str, Any]:
        """A dict from which ``invgen.operator(**config)`` rebuilds this operator (tensors stay tensors)."""
        return {"name": self.name, **self._config, "noise": self.noise.config()}

    def to_matrix(self, x_shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense matrix of a linear operator acting on flattened inputs of shape ``x_shape`` (1 item).

        Returns:
            ``(m, d)`` with ``d = prod(x_shape[1:])``. Meant for small problems (tests, exact posteriors).
        """
        d = math.prod(x_shape[1:])
        eye = torch.eye(d, dtype=dtype).reshape(d, *x_shape[1:])
        with torch.no_grad():
            cols = self.forward(eye).reshape(d, -1)
        return cols.T.contiguous()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items() if not isinstance(v, Tensor))


class LinearOperator(Operator):
    """A linear operator: adds ``adjoint``, ``pinv`` and optionally an SVD (see the module docstring)."""

    linear = True
    has_svd = False

    def adjoint(self, y: Tensor) -> Tensor:
        """``A^T y``; the default differentiates ``<A(x), y>`` (exact, but slower than a closed form)."""
        x0 = torch.zeros(self.input_shape(tuple(y.shape)), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.forward(x0), x0, grad_outputs=y, create_graph=y.requires_grad)
        return g

    def gram(self, x: Tensor) -> Tensor:
        """``A^T A x``."""
        return self.adjoint(self.forward(x))

    def pinv(self, y: Tensor) -> Tensor:
        """The minimum-norm least-squares solution ``A^+ y``; default: CG on ``A A^T u = y``, then ``A^T u``."""
        u = conjugate_gradient(lambda v: self.forward(self.adjoint(v)), y)
        return self.adjoint(u)

    # -- SVD, where cheap ---------------------------------------------------------------------------------------
    def _no_svd(self) -> None:
        raise NotImplementedError(f"{self.name} has no cheap SVD (has_svd is False); use adjoint/pinv instead")

    def svd_vt(self, x: Tensor) -> Tensor:
        """Spectral coordinates ``V^T x`` of an input batch."""
        self._no_svd()
        return x

    def svd_v(self, z: Tensor) -> Tensor:
        """Input-space image ``V z`` of spectral coordinates."""
        self._no_svd()
        return z

    def svd_ut(self, y: Tensor) -> Tensor:
        """Spectral coordinates ``U^T y`` of an observation, zero where the singular value is zero."""
        self._no_svd()
        return y

    def svd_u(self, z: Tensor) -> Tensor:
        """Observation ``U z`` of spectral coordinates (entries with zero singular value are ignored)."""
        self._no_svd()
        return z

    def singulars(self, z: Tensor) -> Tensor:
        """Singular values broadcastable to the spectral tensor ``z``, zero on the null space."""
        self._no_svd()
        return z


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    tol: float = 1e-7,
    max_iter: int = 500,
) -> Tensor:
    """Solve ``apply(x) = b`` for a symmetric positive (semi-)definite linear map, per batch item.

    Args:
        apply: the linear map, acting on tensors shaped like ``b``.
        b: right-hand sides ``(B, ...)``.
        x0: starting point (zeros by default).
        tol: relative residual at which an item stops.
        max_iter: iteration cap.
    """

    def dot(u: Tensor, v: Tensor) -> Tensor:
        return (u * v).reshape(u.shape[0], -1).sum(1).reshape(-1, *([1] * (u.dim() - 1)))

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = dot(r, r)
    b_norm = dot(b, b).clamp_min(torch.finfo(b.dtype).tiny)
    for _ in range(max_iter):
        if bool((rs <= tol**2 * b_norm).all()):
            break
        ap = apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rs / pap.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rs = rs_new
    return x
