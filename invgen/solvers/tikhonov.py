"""Tikhonov / Wiener baseline: the quadratic MAP (and posterior mean) under an i.i.d. Gaussian pixel prior.

``x = argmin ||A x - y||^2 / (2 s^2) + ||x - m||^2 / (2 t^2)``, i.e. ``(A^T A + lam I) x = A^T y + lam m`` with
``lam = s^2 / t^2``: the posterior mean of the prior ``N(m, t^2 I)`` for noise std ``s``. Solved in closed form
through the operator's SVD when it has one, by conjugate gradients otherwise. With noiseless observations (``s = 0``)
it is the limit ``lam -> 0``: the solution of ``A x = y`` nearest ``m``, ``m + A^+ (y - A m)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.operators.base import conjugate_gradient
from invgen.solvers.base import require_linear


def tikhonov(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    prior_mean: float | Tensor = 0.5,
    prior_std: float = 0.25,
    cg_tol: float = 1e-10,
    cg_iters: int = 1000,
) -> Tensor:
    """Tikhonov-regularised reconstruction towards ``prior_mean``, repeated ``n_samples`` times (deterministic).

    Args:
        prior: ignored (the prior is ``N(prior_mean, prior_std^2 I)``).
        operator: a linear invgen operator with Gaussian noise (std >= 0).
        y: observations.
        n_samples: number of (identical) samples N.
        generator: unused.
        prior_mean: ``m``, a constant or a tensor broadcastable to ``(B, C, H, W)``.
        prior_std: ``t > 0``; ``lam = std^2 / t^2``.
        cg_tol: relative residual at which conjugate gradients stop (operators without an SVD).
        cg_iters: conjugate-gradient iteration cap.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_tensor(y, "y")
    require_linear(operator, "tikhonov")
    if operator.noise.name != "gaussian":
        raise TypeError(f"solver 'tikhonov' needs Gaussian observation noise, got {operator.noise.name!r}")
    prior_std = float(prior_std)
    if not math.isfinite(prior_std) or prior_std <= 0:
        raise RangeError(f"tikhonov: prior_std must be finite and > 0, got {prior_std}")
    if cg_tol <= 0 or int(cg_iters) < 1:
        raise RangeError(f"tikhonov: cg_tol must be > 0 and cg_iters >= 1, got {cg_tol} and {cg_iters}")
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    m = torch.as_tensor(prior_mean, dtype=y.dtype, device=y.device)
    check_tensor(m, "prior_mean")
    m = m.expand(x_shape).contiguous()
    lam = float(operator.noise.std) ** 2 / prior_std**2
    if lam == 0:
        x = m + operator.pinv(y - operator(m))
    elif getattr(operator, "has_svd", False):
        s = operator.singulars(operator.svd_vt(m))
        z = (s * operator.svd_ut(y) + lam * operator.svd_vt(m)) / (s**2 + lam)
        x = operator.svd_v(z)
    else:
        x = conjugate_gradient(
            lambda v: operator.gram(v) + lam * v, operator.adjoint(y) + lam * m, m, tol=cg_tol, max_iter=int(cg_iters)
        )
    return x.unsqueeze(0).expand(n_samples, *x.shape).clone()
