"""DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu, Zhang, Liang, Cao, Wen, Timofte &
Van Gool, CVPR Workshops 2023), in the VE form of :mod:`invgen.solvers.schedules`.

Half-quadratic splitting inside the reverse diffusion: each step denoises, solves a data proximal problem around the
denoised image, and re-noises to the next level with a mix of the implied noise and fresh noise:

    x0     = D(x, s_i)
    x0_hat = argmin_z ||y - A z||^2 + rho_i ||z - x0||^2,   rho_i = lambda sigma_y^2 / (2 s_i)^2
    eps    = (x - x0_hat) / s_i
    x     <- x0_hat + s_{i+1} (sqrt(1 - zeta) eps + sqrt(zeta) n)

``rho_i`` is the paper's ``lambda sigma_n^2 / sigma_bar_t^2`` in the scales of the reference code, which every
published ``lambda`` was tuned with: ``sigma_n`` on the [0, 1] image scale, ``sigma_bar_t = 2 s_i`` on the network's
[-1, 1] scale. (Putting both on one scale, ``lambda sigma_y^2 / s_i^2``, as this module did before 2026-12-03, weights
the prior 4x more for the same ``lambda``: on the perf benchmark's observations at 20 NFE the reference scale gains
0.4-0.6 dB PSNR on SR x4, and on the exact GMM posteriors it cuts the sliced-Wasserstein distance 1.4-2.8x. deepinv's
DiffPIR halves ``rho`` through its L2 prox and so acts like ``lambda`` twice its argument here; section ``diffpir``
of ``docs/perf/results.md``.) Equivalently the proximal problem is
``||y - A z||^2 / (2 sigma_y^2) + (lambda / 4) ||z - x0||^2 / (2 s_i^2)``.

The noise levels are the prior's DDPM timesteps with the reference code's ``quad`` spacing by default (strides
shrinking towards the image, :func:`invgen.solvers.schedules.vp_sigmas`); ``spacing="uniform"`` gives the DDIM
spacing of the other solvers here. Where the reference defaults are not the best choice (measured with
``benchmarks/natural.py``, 20 steps, the CPU-trained ``diffusion-natural-gray``, noise std 0.01): deblurring at such
low noise wants a heavier prior (``lam = 28``, the former default: Gaussian blur 25.6 against 24.0 dB on two BSD68
crops), and the ``quad`` spacing's large first stride now and then lets an imperfect prior hallucinate (one of 8
box-inpainting samples of one image at 13 dB against 22 to 25); ``clip=True`` or ``spacing="uniform"`` avoid that
(21.5 to 24.4 and 22.6 to 24.9 dB). The data step is solved

* in closed form through the operator's SVD when it has one: ``V^T z = (s U^T y + rho V^T x0) / (s^2 + rho)``;
* by conjugate gradients on ``(A^T A + rho I) z = A^T y + rho x0`` for other linear operators;
* by ``prox_steps`` gradient steps on the objective for nonlinear operators (autograd).

With noiseless observations (``sigma_y = 0``, so ``rho = 0``) the data step is the projection
``x0 + A^+ (y - A x0)`` (linear operators only). Defaults ``lambda = 7``, ``zeta = 0.3`` are the paper's values for
super-resolution (the brief's reference setting; the paper tunes them per task), with its 100 steps (NFE 100) and
the reference code's ``quad`` spacing.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.operators.base import conjugate_gradient
from invgen.solvers.base import check_steps, check_unit, stack_batch, unstack_batch
from invgen.solvers.ddpm import schedule, start


def data_step(operator: Any, y: Tensor, x0: Tensor, rho: float, prox_steps: int = 50) -> Tensor:
    """``argmin_z ||y - A z||^2 + rho ||z - x0||^2`` (module docstring); ``rho = 0``: the projection on ``A z = y``.

    Shape:
        y: ``(M, ...)`` observations, x0: ``(M, C, H, W)`` -> ``(M, C, H, W)``.
    """
    if operator.linear and getattr(operator, "has_svd", False):
        zx = operator.svd_vt(x0)
        zy = operator.svd_ut(y)
        sv = operator.singulars(zx).expand_as(zx)
        if rho > 0:
            z = (sv * zy + rho * zx) / (sv**2 + rho)
        else:
            z = torch.where(sv > 0, zy / torch.where(sv > 0, sv, torch.ones_like(sv)), zx)
        return operator.svd_v(z)
    if operator.linear:
        if rho == 0:
            return x0 + operator.pinv(y - operator(x0))
        return conjugate_gradient(lambda v: operator.gram(v) + rho * v, operator.adjoint(y) + rho * x0, x0)
    if rho == 0:
        raise RangeError("diffpir: a nonlinear operator needs noisy observations (Gaussian std > 0)")
    # nonlinear: gradient descent on f(z) = ||y - A(z)||^2 + rho ||z - x0||^2, step 1 / (rho + 2) (the quadratic
    # part's curvature 2 rho plus a unit bound on ||J||^2 would give 1 / (rho + 1); the margin keeps it stable)
    z = x0.detach().clone()
    lr = 1.0 / (2.0 * rho + 2.0)
    for _ in range(prox_steps):
        with torch.enable_grad():
            zg = z.requires_grad_(True)
            f = (y - operator(zg)).pow(2).sum() + rho * (zg - x0).pow(2).sum()
            (g,) = torch.autograd.grad(f, zg)
        z = (z - lr * g).detach()
    return z


def diffpir(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 100,
    lam: float = 7.0,
    zeta: float = 0.3,
    prox_steps: int = 50,
    clip: bool = False,
    spacing: str = "quad",
) -> Tensor:
    """DiffPIR sampling (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: an invgen operator with Gaussian noise (SVD, CG or gradient data step, module docstring).
        y: observations.
        n_samples: N samples per observation item, batched as ``N * B`` in one denoiser call per step.
        generator: the random generator.
        steps: number of denoiser calls (100, the paper's NFE).
        lam: ``lambda``, the weight of the prior term in ``rho_i = lambda sigma_y^2 / (2 s_i)^2`` (the reference code's
            scale, module docstring; paper: 7 for SR).
        zeta: fraction of fresh noise in the re-noising step, in [0, 1] (paper: 0.3 for SR).
        prox_steps: gradient steps of the data step for nonlinear operators.
        clip: clamp the denoised estimate ``D(x_t, s_t)`` to the image range [0, 1] before it is used (the "clip
            denoised" practice of DDPM/DDIM codebases; off by default, so the exactness figures are those of the
            published algorithm). It keeps under-trained priors from drifting out of range, where an epsilon
            network's error is amplified by s_t.
        spacing: ``"quad"`` (the reference code's timesteps, default) or ``"uniform"`` (DDIM's), module docstring.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "diffpir")
    check_steps(prox_steps, "diffpir (prox_steps)")
    zeta = check_unit(zeta, "zeta", "diffpir")
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise RangeError(f"diffpir: lam must be finite and > 0, got {lam}")
    if spacing not in ("quad", "uniform"):
        raise RangeError(f"diffpir: spacing must be 'quad' or 'uniform', got {spacing!r}")
    check_tensor(y, "y")
    std = getattr(operator.noise, "std", None)
    if operator.noise.name != "gaussian" or std is None:
        raise TypeError(f"diffpir needs Gaussian observation noise, got {operator.noise.name!r}")
    var_y = float(std) ** 2
    sig = schedule(prior, steps, spacing)
    x = start(operator, y, n_samples, sig[0], generator)
    ys = stack_batch(y, n_samples)
    a, b = math.sqrt(1 - zeta), math.sqrt(zeta)
    for s, s_next in itertools.pairwise(sig):
        x0 = prior.denoise(x, s)
        if clip:
            x0 = x0.clamp(0.0, 1.0)
        x0_hat = data_step(operator, ys, x0, lam * var_y / (2.0 * s) ** 2, prox_steps)
        if s_next == 0:
            x = x0_hat
            break
        eps = (x - x0_hat) / s
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x0_hat + s_next * (a * eps + b * noise)
    return unstack_batch(x, n_samples)
