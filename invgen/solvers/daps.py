"""DAPS: decoupled annealing posterior sampling (Zhang, Chu, Berner, Meng, Anandkumar & Song, "Improving Diffusion
Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025; reference code ``zhangbingliang2019/DAPS``).

DAPS anneals a noise level ``sigma_0 > sigma_1 > ... > sigma_{K-1} > sigma_K = 0`` and at each level draws a clean
image given the current noisy state and the data, then re-noises it *independently* to the next level, so consecutive
states are not tied by a small reverse-diffusion step. In the VE form of :mod:`invgen.solvers.schedules`
(``x_s = x0 + s n``), per level ``i``:

    (a) x0_hat = ODE(x, sigma_i -> 0)        probability-flow ODE, ``ode_steps`` Euler steps of the denoiser
    (b) x0 <- x0_hat, then ``langevin_steps`` times
            x0 <- x0 + h_i (grad log p(y | x0) - (x0 - x0_hat) / r_i^2) + sqrt(2 h_i) n,   r_i = sigma_i
    (c) x  = x0 + sigma_{i+1} n

(b) is unadjusted Langevin on ``p(x0 | x_sigma_i, y) ~ N(x0; x0_hat, r_i^2 I) p(y | x0)``. The Euler step of the ODE
``dx/ds = (x - D(x, s)) / s`` from ``s`` to ``s'`` is ``x <- D + (s' / s) (x - D)`` (DDIM with ``eta = 0``); its
levels run from ``sigma_i`` to ``ode_sigma_min`` on the ``poly-7`` (Karras ``rho = 7``) spacing, then to 0, so the
last Euler step returns the denoiser's output and ``ode_steps = 1`` is Tweedie's ``D(x, sigma_i)``. The annealing
levels use the same ``poly-7`` spacing from ``sigma_max`` to ``sigma_min``, then 0: the sample is the last level's
``x0``. Start: ``x = 0.5 + sigma_max n``. The likelihood gradient is
:func:`invgen.solvers.base.likelihood_grad` (closed form for linear operators with Gaussian noise, autograd
otherwise), so nonlinear operators (``sketch``) and Poisson noise work; ``tau`` replaces it by the reference code's
fixed Gaussian data term ``-||y - A(x0)||^2 / (2 tau^2)``.

Scale. The reference code works on [-1, 1] images with EDM levels: ``x' = 2 x - 1``, ``sigma' = 2 sigma``. Its
defaults (``configs/sampler/edm_daps.yaml``, the task configs' ``lgvd_config`` / ``mcmc_sampler_config``) map to ours
as follows:

* annealing ``sigma_max = 100``, ``sigma_min = 0.1`` -> ``50``, ``0.05``; ODE ``sigma_min = 0.01`` -> ``0.005``;
* ``r_i = sigma_i`` on either scale (both halve);
* ``tau = 0.01`` -> ``0.005`` (only used when ``tau`` is given; by default the operator's own noise model is used);
* the Langevin step: the reference runs Langevin on ``x'`` with step ``lr'``; the target density is the same
  (a change of variables with a constant Jacobian), and ``grad_x = 2 grad_x'``, so the chain
  ``x' <- x' + lr' grad_x' log p + sqrt(2 lr') n`` is ``x <- x + (lr' / 4) grad_x log p + sqrt(2 lr' / 4) n``:
  **our step is the reference's divided by 4**. ``lr = 1e-4`` (super-resolution, Gaussian and motion blur, random
  inpainting; 5e-5 for box inpainting, phase retrieval and nonlinear blur) -> ``2.5e-5``. The step decays linearly
  over the levels, ``h_i = lr (1 + (i / K) (lr_min_ratio - 1))`` with ``lr_min_ratio = 0.01``, as in the reference.

Defaults and presets (``preset``; ``annealing_steps`` / ``ode_steps`` given explicitly override it):

* ``"default"``: the reference code's sampler config and its README's "DAPS-1k" command: 200 levels x 5 ODE steps;
* ``"1k"``: the paper's DAPS-1K table setting, 250 levels x 4 ODE steps (its linear tasks);
* ``"4k"``: the paper's DAPS-4K, 400 levels x 10 ODE steps (its nonlinear tasks);

all with 100 Langevin steps per level (the reference's pixel-space setting).

Step cap (``step_cap=True``, the default): each level's step is at most ``1 / (1 / r_i^2 + ||A||^2 / var)``, the
inverse of a bound on the curvature of the Langevin target (``var`` the data term's variance: ``tau^2``, the Gaussian
noise's ``std^2``, or Poisson's ``mean(y) / rate``; ``||A||^2`` by power iteration, ``||J||^2`` of a nonlinear
operator at mid-grey), so the step times the curvature stays <= 1 where Langevin diverges above 2. The reference's
step was tuned per task with ``tau = 0.01`` on [-1, 1] and operators of norm <= 1; with the default ``lr`` the cap binds
only when ``||A||^2 / var`` exceeds about 4e4, e.g. compressed sensing at noise 0.01 (the hard oracle's ``sensing``
with m = 6 of 64: without the cap its chains reach NaN within the first levels). ``step_cap=False`` runs the
reference's steps as they are.

NFE: ``annealing_steps x ode_steps`` batched denoiser calls (1000 by default); the Langevin steps call only the
operator (``annealing_steps x langevin_steps`` likelihood gradients, 20000 by default).

Measured on the exact oracle (tests/test_solvers_daps.py, float64, N = 1000, the defaults): 4-10x the sliced-W2
noise floor and 2-11x the mixture-weight floor on the five easy problems, the sample variance 2.6x the exact
posterior's on denoising; 8-9x and 17-18x on the hard inpainting and sensing problems (invgen.testing.oracle). With
the true likelihood (std 0.05-0.1 here) the reference's step, tuned with its much smaller ``tau``, moves the Langevin
chains little per level, and the samples stay near the prior: on denoising at 50 levels, ``lr = 1e-4`` with
``lr_min_ratio = 1`` cuts the SW multiple from 10.5 to 3.6 (the rest is the Gaussian ``p(x0 | x_s)`` around an ODE
estimate: ``ode_steps = 1``, Tweedie's mean, with 400 Langevin steps gives 2.4).

What differs from the reference code:

* the data term is the operator's own log-likelihood (the true noise std, or Poisson) by default; the reference uses a
  fixed Gaussian ``tau = 0.01`` on [-1, 1] images whatever the noise (std 0.05 there: a data term weighted 25x
  the likelihood), which ``tau=0.005`` reproduces on our scale;
* the step cap (above); without it a NaN in the Langevin chain propagates, where the reference returns zeros for the
  whole batch;
* the reference's later versions add HMC and Metropolis-Hastings variants of step (b) and other prior scores; only
  its Langevin with the Gaussian ``p(x0 | x_t)`` (the paper's algorithm) is here;
* the prior's denoiser is used at whatever level DAPS asks; a VP prior's denoiser maps it to a fractional timestep
  (the reference wraps its DDPM networks the same way through EDM preconditioning).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError
from invgen.solvers.base import check_unit, likelihood_grad, stack_batch, unstack_batch
from invgen.solvers.ddim import ddim_step
from invgen.solvers.langevin import effective_variance, operator_norm2

# preset: (annealing_steps, ode_steps)
PRESETS = {"default": (200, 5), "1k": (250, 4), "4k": (400, 10)}


def poly_sigmas(steps: int, sigma_max: float, sigma_min: float, rho: float = 7.0) -> list[float]:
    """``steps`` levels from ``sigma_max`` to ``sigma_min`` on the reference's ``poly-rho`` spacing (Karras et al.),
    then a trailing 0; one step is ``[sigma_max, 0]``."""
    if steps == 1:
        return [sigma_max, 0.0]
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    inner = [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(1, steps - 1)]
    return [sigma_max, *inner, sigma_min, 0.0]


def pf_ode(prior: Any, x: Tensor, sigma: float, steps: int, sigma_min: float) -> Tensor:
    """``x0_hat``: ``steps`` Euler steps of the probability-flow ODE from ``x`` at level ``sigma`` down to 0, through
    the levels :func:`poly_sigmas` ``(steps, sigma, sigma_min)``; each step is ``x <- D + (s' / s) (x - D)``, so the
    last returns ``D(x, sigma_min)`` (``D(x, sigma)`` for one step). NFE: ``steps``. Shape: like ``x``."""
    for s, s_next in itertools.pairwise(poly_sigmas(steps, sigma, sigma_min)):
        x = ddim_step(x, prior.denoise(x, s), s, s_next, 0.0, None)
    return x


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"daps: {name} must be an integer >= 1, got {value!r}")
    return value


def _positive(value: Any, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise RangeError(f"daps: {name} must be finite and > 0, got {value!r}")
    return v


def data_grad(operator: Any, y: Tensor, x: Tensor, tau: float | None) -> Tensor:
    """``grad_x log p(y | x)``: the operator's noise model (``tau=None``) or the Gaussian ``-||y - A(x)||^2 /
    (2 tau^2)`` (the residual whitened for a joint observation, :mod:`invgen.operators.joint`).
    Shape: y ``(M, ...)``, x ``(M, C, H, W)`` -> like x."""
    if tau is None:
        return likelihood_grad(operator, y, x)[1]
    whiten = operator.noise.whiten  # the identity but for a joint observation (invgen.operators.joint)
    if operator.linear:
        r = y - operator(x)
        return operator.adjoint(whiten(whiten(r)) if operator.noise.whitened else r) / tau**2
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = whiten(y - operator(xg)).pow(2).sum() / (2 * tau**2)
        (g,) = torch.autograd.grad(loss, xg)
    return -g


def daps(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    preset: str = "default",
    annealing_steps: int | None = None,
    ode_steps: int | None = None,
    langevin_steps: int = 100,
    lr: float = 2.5e-5,
    lr_min_ratio: float = 0.01,
    sigma_max: float = 50.0,
    sigma_min: float = 0.05,
    ode_sigma_min: float = 0.005,
    tau: float | None = None,
    step_cap: bool = True,
) -> Tensor:
    """Decoupled annealing posterior sampling (module docstring).

    Args:
        prior: a prior with the ``denoiser`` capability.
        operator: any invgen operator, linear or not (nonlinear ones must be differentiable).
        y: observations.
        n_samples: N samples per observation item, batched as ``N * B`` in one denoiser call per ODE step.
        generator: the random generator.
        preset: ``"default"`` (200 levels x 5 ODE steps), ``"1k"`` (250 x 4) or ``"4k"`` (400 x 10).
        annealing_steps: number of annealing levels ``K`` (None: the preset's).
        ode_steps: Euler steps of the probability-flow ODE per level (None: the preset's).
        langevin_steps: Langevin steps per level (100, the reference's).
        lr: Langevin step on our [0, 1] scale at the first level (2.5e-5, the reference's 1e-4 divided by 4).
        lr_min_ratio: the step at the last level over the first, linear decay (0.01, the reference's).
        sigma_max: first annealing level (50, the reference's 100 halved).
        sigma_min: last non-zero annealing level (0.05, the reference's 0.1 halved).
        ode_sigma_min: last non-zero ODE level, below ``sigma_min`` (0.005, the reference's 0.01 halved).
        tau: None (default) uses the operator's noise model; a float replaces the likelihood by the Gaussian
            ``-||y - A(x)||^2 / (2 tau^2)`` (the reference's 0.01 on [-1, 1] is ``tau=0.005``); needed when the
            operator's Gaussian noise std is 0.
        step_cap: cap each level's Langevin step at the inverse of a bound on its target's curvature (module
            docstring); False: the reference's steps as they are.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    if preset not in PRESETS:
        raise ValueError(f"daps: preset must be one of {sorted(PRESETS)}, got {preset!r}")
    annealing_steps = _count(PRESETS[preset][0] if annealing_steps is None else annealing_steps, "annealing_steps")
    ode_steps = _count(PRESETS[preset][1] if ode_steps is None else ode_steps, "ode_steps")
    langevin_steps = _count(langevin_steps, "langevin_steps")
    lr = _positive(lr, "lr")
    lr_min_ratio = check_unit(lr_min_ratio, "lr_min_ratio", "daps")
    sigma_max, sigma_min = _positive(sigma_max, "sigma_max"), _positive(sigma_min, "sigma_min")
    ode_sigma_min = _positive(ode_sigma_min, "ode_sigma_min")
    if not ode_sigma_min < sigma_min <= sigma_max:
        raise RangeError(
            f"daps: expected 0 < ode_sigma_min < sigma_min <= sigma_max, got {ode_sigma_min}, {sigma_min}, {sigma_max}"
        )
    if not isinstance(step_cap, bool):
        raise TypeError(f"daps: step_cap must be True or False, got {step_cap!r}")
    if tau is not None:
        tau = _positive(tau, "tau")
    elif operator.noise.name == "gaussian" and float(operator.noise.std) <= 0:
        raise RangeError("daps: the operator's Gaussian noise std is 0, so there is no likelihood; give tau > 0")
    check_tensor(y, "y")

    levels = poly_sigmas(annealing_steps, sigma_max, sigma_min)
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    shape = (n_samples * x_shape[0], *x_shape[1:])
    kw = {"dtype": y.dtype, "device": y.device}
    ys = stack_batch(y, n_samples)
    # the step cap's data curvature bound ||A||^2 / var (||J||^2 at mid-grey for a nonlinear operator)
    data_curvature = 0.0
    if step_cap:
        var = tau**2 if tau is not None else effective_variance(operator, y)
        data_curvature = operator_norm2(operator, torch.full((1, *x_shape[1:]), 0.5, **kw)) / var

    x = 0.5 + sigma_max * torch.randn(shape, generator=generator, **kw)
    for i, (sig, nxt) in enumerate(itertools.pairwise(levels)):
        x0_hat = pf_ode(prior, x, sig, ode_steps, ode_sigma_min)  # (a)
        h = lr * (1.0 + (i / annealing_steps) * (lr_min_ratio - 1.0))
        if step_cap:
            h = min(h, 1.0 / (1.0 / sig**2 + data_curvature))
        x0 = x0_hat.clone()
        for _ in range(langevin_steps):
            drift = data_grad(operator, ys, x0, tau) - (x0 - x0_hat) / sig**2
            x0 = x0 + h * drift + math.sqrt(2 * h) * torch.randn(shape, generator=generator, **kw)  # (b)
        x = x0 + nxt * torch.randn(shape, generator=generator, **kw) if nxt > 0 else x0  # (c)
    return unstack_batch(x, n_samples)
