"""Lasso baseline: sparsity in the pixel basis.

``x = argmin 1/2 ||A x - y||^2 + lam ||x||_1`` (Tibshirani 1996), solved by FISTA (Beck & Teboulle 2009) with the step
``1 / ||A||^2`` (power iteration) and the soft-thresholding proximal map; optionally restricted to a box (the prox of
``lam ||x||_1`` plus the indicator of ``[lo, hi]`` is soft-thresholding followed by clamping, as both are separable).
It is the MNIST baseline of compressed sensing with generative models (Bora, Jalal, Price & Dimakis, ICML 2017:
"Lasso in the pixel basis", ``lam = 0.1`` with ``A_ij ~ N(0, 1/m)``, estimates clipped to [0, 1]), where digits are
sparse in pixels. ``bounds=None`` gives the plain Lasso; the default clips afterwards like the paper.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.solvers.base import require_linear
from invgen.solvers.tv import operator_norm2


def objective(operator: Any, y: Tensor, x: Tensor, lam: float) -> Tensor:
    """``1/2 ||A x - y||^2 + lam ||x||_1`` per item. Shape: x ``(B, C, H, W)`` -> ``(B,)``."""
    r = operator(x) - y
    return 0.5 * (r**2).reshape(x.shape[0], -1).sum(1) + lam * x.abs().reshape(x.shape[0], -1).sum(1)


def lasso(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    lam: float = 0.1,
    iters: int = 2000,
    tol: float = 1e-7,
    bounds: tuple[float, float] | None = None,
    clip: bool = True,
) -> tuple[Tensor, dict[str, Any]]:
    """Lasso (l1-regularised least squares) by FISTA, repeated ``n_samples`` times (deterministic).

    Args:
        prior: ignored (the prior is the Laplace ``exp(-lam ||x||_1)`` up to the noise scale).
        operator: a linear invgen operator.
        y: observations.
        n_samples: number of (identical) samples N.
        generator: unused.
        lam: weight of ``||x||_1`` in ``1/2 ||Ax - y||^2 + lam ||x||_1``, >= 0 (0: least squares).
        iters: maximum number of FISTA iterations.
        tol: stop when every item's relative change ``||x' - x|| / ||x||`` falls below it.
        bounds: ``(lo, hi)`` to solve the box-constrained Lasso, or None for the plain one.
        clip: clamp the result to [0, 1] afterwards (the paper's baseline: the Lasso solution, clipped).

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"iterations", "objective" (per item, before clipping), "lam"}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_tensor(y, "y")
    require_linear(operator, "lasso")
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise RangeError(f"lasso: lam must be finite and >= 0, got {lam}")
    if int(iters) < 1 or not tol >= 0:
        raise RangeError(f"lasso: iters must be >= 1 and tol >= 0, got {iters} and {tol}")
    if bounds is not None:
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise RangeError(f"lasso: bounds must be (lo, hi) with lo < hi, got {bounds}")
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    step = 1.0 / operator_norm2(operator, x_shape, y)
    aty = operator.adjoint(y)

    def prox(v: Tensor) -> Tensor:
        v = torch.sign(v) * (v.abs() - step * lam).clamp_min(0.0)
        return v if bounds is None else v.clamp(lo, hi)

    x = torch.zeros(x_shape, dtype=y.dtype, device=y.device)
    v, t = x, 1.0
    it = 0
    for it in range(1, int(iters) + 1):  # noqa: B007 - the count is reported
        x_new = prox(v - step * (operator.gram(v) - aty))
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        change = (x_new - x).reshape(x.shape[0], -1).norm(dim=1)
        size = x_new.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        x, t = x_new, t_new
        if bool((change <= tol * size).all()):
            break
    extras = {"iterations": it, "objective": objective(operator, y, x, lam).tolist(), "lam": lam}
    if clip:
        x = x.clamp(0.0, 1.0)
    return x.unsqueeze(0).expand(n_samples, *x.shape).clone(), extras
