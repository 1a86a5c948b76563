"""Total-variation MAP baseline by the primal-dual algorithm of Chambolle and Pock (2011).

Solves, per observation item,

    min_x  1/2 ||A x - y||^2 + lam * TV(x)   subject to  lo <= x <= hi  (default [0, 1]),

with the isotropic total variation ``TV(x) = sum_{c, i, j} sqrt(dx^2 + dy^2)`` of forward differences with a
Neumann boundary (zero difference past the last row and column), summed over channels independently. This is the
objective and discretisation of ``skimage.restoration.denoise_tv_chambolle(f, weight=lam, channel_axis=...)`` for
``A = I`` (the Rudin-Osher-Fatemi model), which the tests compare against.

The algorithm treats ``K = [A; grad]`` as one linear map (Algorithm 1 of Chambolle & Pock, theta = 1) with
``F(Ax, grad x) = 1/2 ||Ax - y||^2 + lam ||grad x||_{2,1}`` and ``G`` the box indicator:

    p1 <- (p1 + sigma (A xb - y)) / (1 + sigma)         (prox of F1*)
    p2 <- project_{|p2| <= lam}(p2 + sigma grad xb)     (prox of F2*)
    x' <- clip(x - tau (A^T p1 + grad^T p2))            (prox of G)
    xb <- 2 x' - x

with ``sigma = tau = 0.99 / ||K||`` and ``||K||^2 <= ||A||^2 + 8`` (``||A||`` by power iteration).

Default ``lam``: the MAP weight under noise std ``s`` is ``lam = s^2 * beta`` for a TV prior ``exp(-beta TV)``;
for images in [0, 1] a weight proportional to ``s`` works well across noise levels (the curvature of the data term
is ``1 / s^2`` per pixel, the TV penalty's jumps are of order 1). A sweep of ``lam = c * s`` over denoising,
Gaussian deblurring (sigma 1) and 50% random inpainting of piecewise-constant 32x32 images at s in {0.02, 0.05, 0.1,
0.2} put each task's best ``c`` between 0.4 and 1.0; ``c = 0.6`` is within 1.3 dB of the best everywhere. A floor of
``1e-3`` serves noiseless data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError

LAM_PER_STD = 0.6
LAM_FLOOR = 1e-3


def grad(x: Tensor) -> Tensor:
    """Forward differences with a Neumann boundary. Shape: ``(B, C, H, W)`` -> ``(2, B, C, H, W)`` (rows, cols)."""
    g = x.new_zeros((2, *x.shape))
    g[0, ..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    g[1, ..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return g


def grad_adjoint(p: Tensor) -> Tensor:
    """``grad^T p`` (minus the divergence). Shape: ``(2, B, C, H, W)`` -> ``(B, C, H, W)``."""
    out = p.new_zeros(p.shape[1:])
    out[..., 1:, :] += p[0, ..., :-1, :]
    out[..., :-1, :] -= p[0, ..., :-1, :]
    out[..., :, 1:] += p[1, ..., :, :-1]
    out[..., :, :-1] -= p[1, ..., :, :-1]
    return out


def tv_norm(x: Tensor) -> Tensor:
    """Isotropic total variation per item (channels summed). Shape: ``(B, C, H, W)`` -> ``(B,)``."""
    g = grad(x)
    return torch.sqrt((g**2).sum(0)).reshape(x.shape[0], -1).sum(1)


def objective(operator: Any, y: Tensor, x: Tensor, lam: float) -> Tensor:
    """``1/2 ||A x - y||^2 + lam TV(x)`` per item. Shape: x ``(B, C, H, W)`` -> ``(B,)``."""
    r = operator(x) - y
    return 0.5 * (r**2).reshape(x.shape[0], -1).sum(1) + lam * tv_norm(x)


def operator_norm2(operator: Any, x_shape: tuple[int, ...], like: Tensor, iters: int = 30) -> float:
    """Estimate ``||A||^2`` (largest eigenvalue of ``A^T A``) by power iteration, with a 2% safety margin."""
    gen = torch.Generator(device=like.device).manual_seed(1234)
    v = torch.randn(x_shape, generator=gen, dtype=like.dtype, device=like.device)
    est = 0.0
    for _ in range(iters):
        v = v / v.reshape(v.shape[0], -1).norm(dim=1).clamp_min(1e-30).reshape(-1, *([1] * (v.dim() - 1)))
        w = operator.gram(v)
        est = float((w * v).reshape(v.shape[0], -1).sum(1).max())
        v = w
    return 1.02 * est


def default_lam(operator: Any) -> float:
    """``lam = 0.6 * std`` (floor 1e-3) from the operator's Gaussian noise; see the module docstring."""
    if operator.noise.name != "gaussian":
        raise TypeError(f"solver 'tv': no default lam for {operator.noise.name!r} noise; pass lam=...")
    return max(LAM_PER_STD * float(operator.noise.std), LAM_FLOOR)


def start(operator: Any, y: Tensor, x_shape: tuple[int, ...], init: str) -> Tensor:
    """The starting point of :func:`tv` (see its ``init``). Shape: y ``(B, ...)`` -> ``(B, C, H, W)``."""
    if init == "pinv":
        return operator.pinv(y)
    if init != "mean":
        raise ValueError(f"tv: init must be 'mean' or 'pinv', got {init!r}")
    dims = tuple(range(1, len(x_shape)))
    ones = y.new_ones(x_shape)
    weight = operator.adjoint(operator(ones)).mean(dims, keepdim=True)
    m = operator.adjoint(y).mean(dims, keepdim=True) / weight.clamp_min(1e-12)
    m = m * ones
    return m + operator.pinv(y - operator(m))


def tv(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    lam: float | None = None,
    iters: int = 300,
    tol: float = 1e-6,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    init: str = "mean",
) -> tuple[Tensor, dict[str, Any]]:
    """Total-variation MAP by Chambolle-Pock, repeated ``n_samples`` times (deterministic).

    Args:
        prior: ignored (the prior is ``exp(-beta TV(x))``).
        operator: a linear invgen operator.
        y: observations.
        n_samples: number of (identical) samples N.
        generator: unused.
        lam: TV weight of the objective ``1/2 ||Ax - y||^2 + lam TV(x)``; default ``0.6 * std`` (module docstring).
        iters: maximum number of primal-dual iterations.
        tol: stop when every item's relative change ``||x' - x|| / ||x||`` falls below it.
        bounds: the box ``(lo, hi)`` for x, or None for no constraint.
        init: the starting point (the optimum does not depend on it, the iterations needed do): ``"mean"`` (default)
            the solution of ``A x = y`` nearest the constant image ``m``, ``m + A^+ (y - A m)`` with ``m`` the
            item's mean observed value ``mean(A^T y) / mean(A^T 1)`` (for inpainting: the holes filled with the mean
            of the observed pixels); ``"pinv"`` ``A^+ y`` (holes start at 0, and large ones need thousands of
            iterations to fill: 13.1 dB after 300 iterations on 256x256 BSD68 crops with the DDNM mask, against
            20.4 dB from ``"mean"``).

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"iterations", "objective" (per item, list), "lam"}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_tensor(y, "y")
    if not getattr(operator, "linear", False):
        raise TypeError(f"solver 'tv' needs a linear operator, got the nonlinear {operator.name!r}")
    lam = default_lam(operator) if lam is None else float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise RangeError(f"tv: lam must be finite and >= 0, got {lam}")
    if int(iters) < 1 or not tol >= 0:
        raise RangeError(f"tv: iters must be >= 1 and tol >= 0, got {iters} and {tol}")
    if bounds is not None:
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise RangeError(f"tv: bounds must be (lo, hi) with lo < hi, got {bounds}")
    x_shape = tuple(operator.input_shape(tuple(y.shape)))

    def box(v: Tensor) -> Tensor:
        return v if bounds is None else v.clamp(lo, hi)

    step = 0.99 / math.sqrt(operator_norm2(operator, x_shape, y) + 8.0)
    sigma = tau = step
    x = box(start(operator, y, x_shape, init))
    xb = x.clone()
    p1 = torch.zeros_like(y)
    p2 = x.new_zeros((2, *x_shape))
    it = 0
    for it in range(1, int(iters) + 1):  # noqa: B007 - the count is reported
        p1 = (p1 + sigma * (operator(xb) - y)) / (1 + sigma)
        p2 = p2 + sigma * grad(xb)
        p2 = p2 / (torch.sqrt((p2**2).sum(0, keepdim=True)) / max(lam, 1e-300)).clamp_min(1.0)
        x_new = box(x - tau * (operator.adjoint(p1) + grad_adjoint(p2)))
        xb = 2 * x_new - x
        change = (x_new - x).reshape(x.shape[0], -1).norm(dim=1)
        size = x.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12)
        x = x_new
        if bool((change <= tol * size).all()):
            break
    extras = {"iterations": it, "objective": objective(operator, y, x, lam).tolist(), "lam": lam}
    return x.unsqueeze(0).expand(n_samples, *x.shape).clone(), extras
