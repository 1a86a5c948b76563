"""DDNM+: zero-shot restoration with the Denoising Diffusion Null-space Model (Wang, Yu & Zhang, ICLR 2023).

Each step denoises, ``x_0 = D(x, sigma_i)``, replaces the range-space part of ``x_0`` by the data (the range-null
decomposition ``x_0_hat = x_0 - Sigma A^+ (A x_0 - y)``, Eq. 17) and takes a DDIM step to ``sigma_{i+1}``. Written
in the operator's spectral coordinates (``A = U diag(s) V^T``, ``ybar_j = (U^T y)_j / s_j``, ``nu_j = sigma_y /
s_j`` the noise std of ``ybar_j``), the projection is ``xbar_0_hat = xbar_0 - lambda_j (xbar_0 - ybar)`` on the
observed coordinates and leaves the null space alone.

Noise-aware scaling (DDNM+, Eq. 19, in the DDIM form of the authors' SVD code): the projection copies the data's
noise into the state, so on an observed coordinate

* ``sigma_{i+1} >= nu_j``: ``lambda_j = 1`` and fresh noise of std ``sqrt(sigma_{i+1}^2 - nu_j^2)`` tops the copied
  noise up to ``sigma_{i+1}``;
* ``sigma_{i+1} < nu_j``: ``lambda_j = sqrt(1 - eta^2) sigma_{i+1} / nu_j`` (the copied noise has std ``sqrt(1 -
  eta^2) sigma_{i+1}``) and fresh noise of std ``eta sigma_{i+1}``;

while the null space (and every coordinate when ``sigma_y = 0``, where ``lambda = 1``) takes the DDIM update
``xbar_0_hat + sqrt(1 - eta^2) sigma_{i+1} ebar + eta sigma_{i+1} n``, ``ebar = (xbar - xbar_0) / sigma_i``.

VE form: the authors' update ``x_{t-1} = sqrt(abar_{t-1}) x_0_hat + ...`` divided by ``sqrt(abar_{t-1})`` is the
above with ``sigma = sqrt((1 - abar) / abar)``; the conditions compare ratios of noise levels only, and the
projection is affine-equivariant, so the [0, 1] states ``x_sigma = x_0 + sigma n`` and the [0, 1]-scale
``sigma_y`` are used directly. With ``sigma_y = 0`` the last step ends on ``x_0_hat`` with ``lambda = 1``: the
samples satisfy ``A x = y`` exactly (up to rounding).

Time travel (the paper's Sec. 3.4, RePaint's jump schedule): with ``travel_length = L > 1`` or ``travel_repeat =
r > 1``, every ``L`` steps the state is diffused forward ``L`` levels, ``x <- x + sqrt(sigma_hi^2 - sigma_lo^2) n``
(the forward process ``q(x_hi | x_lo)``), and the ``L`` steps are re-run, ``r - 1`` times. Defaults are the
paper's: 100 steps, ``eta = 0.85``, no time travel. The start is ``0.5 + sigma_max n``, the VE image of the VP
``x_T ~ N(0, I)``. NFE: one batched denoiser call per (re-)run step.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.solvers.base import check_steps, check_unit, unstack_batch
from invgen.solvers.ddrm import check_svd_problem, spectral_setup
from invgen.solvers.repaint import jump_schedule  # RePaint's time-travel schedule (also re-exported here)
from invgen.solvers.schedules import prior_sigmas


def ddnm(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 100,
    eta: float = 0.85,
    travel_length: int = 1,
    travel_repeat: int = 1,
    clip: bool = False,
) -> Tensor:
    """DDNM+ posterior sampling: range-null projection of the denoised image, then a DDIM step (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: a linear operator with an SVD (``has_svd``) and Gaussian noise of any std (0 included).
        y: observations.
        n_samples: N samples per observation item, run batched as ``N * B`` items.
        generator: the random generator.
        steps: number of noise levels of the prior's schedule (``prior_sigmas``).
        eta: fresh-noise fraction of the DDIM step, in [0, 1].
        travel_length: time-travel jump length ``L`` in levels (1 with ``travel_repeat = 1``: off).
        travel_repeat: how many times each stretch of ``L`` levels is run (1: no time travel).
        clip: clamp the denoised estimate ``D(x_t, s_t)`` to the image range [0, 1] before it is used (the "clip
            denoised" practice of DDPM/DDIM codebases; off by default, so the exactness figures are those of the
            published algorithm). It keeps under-trained priors from drifting out of range, where an epsilon
            network's error is amplified by s_t.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    check_steps(steps, "ddnm")
    check_unit(eta, "eta", "ddnm")
    for name, v in (("travel_length", travel_length), ("travel_repeat", travel_repeat)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"ddnm: {name} must be an integer >= 1, got {v!r}")
    if travel_length >= steps and travel_repeat > 1:
        raise ValueError(f"ddnm: travel_length must be < steps = {steps} to travel, got {travel_length}")
    check_tensor(y, "y")
    sigma_y = check_svd_problem(operator, "ddnm")
    sig_list = prior_sigmas(prior, steps).tolist()

    def level(k: int) -> float:  # level index k in [-1, steps - 1] -> noise level (k = -1: clean)
        return sig_list[steps - 1 - k] if k >= 0 else 0.0

    x_shape, uty, s = spectral_setup(operator, y, n_samples)
    kw = {"dtype": y.dtype, "device": y.device}
    seen = s > 0
    s_safe = torch.where(seen, s, torch.ones_like(s))
    ybar = torch.where(seen, uty / s_safe, torch.zeros_like(uty))
    nu = torch.where(seen, sigma_y / s_safe, torch.zeros_like(s))
    nu_safe = torch.where(nu > 0, nu, torch.ones_like(nu))
    noisy = seen & (nu > 0)  # observed coordinates with noisy data: the DDNM+ scaling applies

    def randn() -> Tensor:
        return torch.randn(uty.shape, generator=generator, **kw)

    times = jump_schedule(steps, travel_length, travel_repeat)
    x = torch.full(x_shape, 0.5, **kw) + level(times[0]) * torch.randn(x_shape, generator=generator, **kw)
    for k, k_next in itertools.pairwise(times):
        sig, nxt = level(k), level(k_next)
        if k_next > k:  # time travel: forward diffusion q(x_nxt | x_sig)
            x = x + math.sqrt(nxt**2 - sig**2) * torch.randn(x_shape, generator=generator, **kw)
            continue
        z = operator.svd_vt(x)
        x0 = prior.denoise(x, sig)
        z0 = operator.svd_vt(x0.clamp(0.0, 1.0) if clip else x0)
        lam = torch.where(noisy & (nxt < nu), math.sqrt(1 - eta**2) * nxt / nu_safe, torch.ones_like(nu))
        z0_hat = torch.where(seen, z0 - lam * (z0 - ybar), z0)
        n = randn()
        ddim = z0_hat + math.sqrt(1 - eta**2) * nxt * (z - z0) / sig + eta * nxt * n
        top_up = (nxt**2 - nu.clamp_max(nxt) ** 2).sqrt()
        renoise = z0_hat + torch.where(nxt >= nu, top_up, torch.full_like(nu, eta * nxt)) * n
        x = operator.svd_v(torch.where(noisy, renoise, ddim))
    return unstack_batch(x, n_samples)
