"""PiGDM: pseudoinverse-guided diffusion models (Song, Vahdat, Mardani & Kautz, ICLR 2023).

PiGDM approximates ``p(x_0 | x_t)`` by a Gaussian ``N(x_0_hat, r_t^2 I)`` around the denoiser's output
``x_0_hat = D(x_t, sigma_t)``, so that ``p(y | x_t) ~ N(A x_0_hat, r_t^2 A A^T + sigma_y^2 I)`` and the guidance is
its gradient through the denoiser, a vector-Jacobian product:

    g = (d x_0_hat / d x_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^{-1} (y - A x_0_hat).

With ``A = U diag(s) V^T`` the inverse is closed form: ``A^T (r^2 A A^T + sigma_y^2 I)^{-1} r = V diag(s_j / (r^2
s_j^2 + sigma_y^2)) U^T r`` (zero on the null space), so ``sigma_y = 0`` is allowed too.

``r_t`` on our scale. The paper takes ``r_t^2 = sigma_t^2 / (1 + sigma_t^2)``: the variance of ``x_0 | x_t`` for
data ``x_0 ~ N(0, I)`` on the [-1, 1] scale with VE noise ``sigma_t`` (``1 - abar_t`` in VP terms). Our states
``x_sigma = x_0 + sigma n`` of [0, 1] images are the [-1, 1] states halved (``x' = 2 x - 1``, ``sigma' = 2 sigma``),
so the same assumption (unit variance on [-1, 1], i.e. variance 1/4 on [0, 1]) gives ``r'^2 = 4 sigma^2 / (1 + 4
sigma^2)`` and, on our scale (``r = r' / 2``),

    r_t^2 = sigma_t^2 / (1 + 4 sigma_t^2).

With it, ``g`` above is exactly twice the paper's [-1, 1]-scale gradient, i.e. the same gradient of ``log p(y |
x_t)`` expressed in our variable.

Step. ``log p(x_t | y) = log p(x_t) + log p(y | x_t)``, so the guided denoiser (Tweedie) is ``x_0_y = x_0_hat +
sigma_t^2 g`` with ``eps_y = (x_t - x_0_y) / sigma_t``; the DDIM step with ``eta`` (DDIM's convention: 1 is the DDPM
ancestral step) is ``x_{t-1} = x_0_y + sqrt(sigma_{t-1}^2 - c^2) eps_y + c n``, ``c = eta sigma_{t-1} sqrt(1 -
sigma_{t-1}^2 / sigma_t^2)``. This is the paper's guided score (weight 1) plugged into DDIM in VE form; it
reproduces the exact posterior whenever the Gaussian approximation of ``p(x_0 | x_t)`` is exact. Defaults: 100
steps and ``eta = 1``, as in the paper's experiments. Start: ``0.5 + sigma_max n``. NFE: one batched denoiser call
(with its backward pass) per step.

Clipping (``clip=True``, the default). The guidance is scaled by ``sigma_t^2``; with an exact denoiser
``sigma_t^2 dD/dx = Cov[x_0 | x_t]`` stays bounded, but a learned epsilon-network's Jacobian error is multiplied by
``sigma_t^2`` (about 6000 at a VP prior's ``sigma_max`` near 78), so ``x_0_y`` explodes and the chain diverges
(measured with ``diffusion-mnist``: NaN from the first steps). ``clip`` clamps ``x_0_y`` to the image range [0, 1]
(the "clip denoised" practice of DDPM/DDIM codebases), which keeps the chain finite until the noise level where
the Jacobian is accurate. On MNIST SR x4 (8 images, 50 steps, N = 2) it gives PSNR 19.2 dB / LPIPS 0.021;
without it the chain diverges. With the exact GMM oracle the clamp is inactive (its posterior means lie in
[0, 1]), so the exactness figures are those of the unclipped algorithm.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.solvers.base import check_state, check_steps, check_unit, unstack_batch
from invgen.solvers.ddrm import check_svd_problem, spectral_setup
from invgen.solvers.schedules import prior_sigmas


def pigdm(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 100,
    eta: float = 1.0,
    clip: bool = True,
) -> Tensor:
    """PiGDM posterior sampling: DDIM on the pseudoinverse-guided score (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability, differentiable in its input (autograd).
        operator: a linear operator with an SVD (``has_svd``) and Gaussian noise of any std (0 included).
        y: observations.
        n_samples: N samples per observation item, run batched as ``N * B`` items.
        generator: the random generator.
        steps: number of denoising steps on the prior's schedule (``prior_sigmas``).
        eta: DDIM noise parameter in [0, 1] (0: deterministic, 1: ancestral).
        clip: clamp the guided estimate ``x_0_y`` to [0, 1] at every step (module docstring).

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "pigdm")
    check_unit(eta, "eta", "pigdm")
    check_tensor(y, "y")
    sigma_y = check_svd_problem(operator, "pigdm")
    sigmas = [*prior_sigmas(prior, steps).tolist(), 0.0]
    x_shape, uty, s = spectral_setup(operator, y, n_samples)
    kw = {"dtype": y.dtype, "device": y.device}

    x = torch.full(x_shape, 0.5, **kw) + sigmas[0] * torch.randn(x_shape, generator=generator, **kw)
    for i, (sig, nxt) in enumerate(itertools.pairwise(sigmas)):
        r2 = sig**2 / (1 + 4 * sig**2)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = prior.denoise(xg, sig)
            with torch.no_grad():
                w = s * (uty - s * operator.svd_vt(x0)) / (r2 * s**2 + sigma_y**2).clamp_min(1e-300)
                v = operator.svd_v(torch.where(s > 0, w, torch.zeros_like(w)))
            (g,) = torch.autograd.grad(x0, xg, grad_outputs=v)
        x0_y = x0.detach() + sig**2 * g
        if clip:
            x0_y = x0_y.clamp(0.0, 1.0)
        c = eta * nxt * math.sqrt(max(1 - nxt**2 / sig**2, 0.0))
        noise = torch.randn(x_shape, generator=generator, **kw)
        x = x0_y + math.sqrt(max(nxt**2 - c**2, 0.0)) * (x - x0_y) / sig + c * noise
        check_state(x, "pigdm", i + 1, steps, detail=f"steps={steps}, clip={clip}")
    return unstack_batch(x.detach(), n_samples)
