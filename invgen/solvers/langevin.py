"""Pixel-space Langevin samplers of the posterior: ULA, MALA and annealed Langevin.

Both follow the posterior score ``grad log p(x | y) = score(x) + grad_x log p(y | x)``, with the prior's score
(``prior.score(x, sigma)``) and the likelihood gradient of :func:`invgen.solvers.base.likelihood_grad` (closed form
for linear Gaussian problems, autograd otherwise, so nonlinear operators and Poisson noise work too). ``N`` chains
per observation item run batched as ``N * B`` items, one prior call per step for all of them; each chain returns its
final state, so the N samples are independent given the start.

* :func:`ula` (unadjusted Langevin) iterates ``x <- x + g grad log p(x | y) + sqrt(2 g) n``. It is biased by
  ``O(g)`` (its stationary law is not the posterior), so its default step is small.
* :func:`mala` proposes the same move and accepts it with the Metropolis-Hastings probability computed from
  ``prior.log_prob`` and ``operator.log_likelihood``: exact in the limit (for an exact ``log_prob``). Each chain's
  step adapts during burn-in (Robbins-Monro on ``log g`` towards acceptance 0.574, the optimal rate of Roberts &
  Rosenthal 1998) and is then frozen, so the post-burn-in chain is a valid MCMC chain.
* :func:`annealed_langevin` runs ULA through a decreasing geometric sequence of noise levels of the smoothed prior
  (Song & Ermon 2019), with the likelihood's variance inflated by each level (Jalal et al. 2021); it starts from
  noise and needs only a denoiser or a noise-conditional score.

Default step size: ``g = c * s^2 / ||A||^2``, the inverse curvature of the log-likelihood (``||A||^2 / s^2``,
``||A||`` by power iteration on ``A^T A``, or on ``J^T J`` of a nonlinear operator at the start point) times
``c = 0.05`` for ULA and ``c = 0.5`` as MALA's starting point. A prior stiffer than the likelihood (tiny prior
variances) needs a smaller ``step_size`` for ULA; MALA adapts to it. For Poisson noise ``s^2`` is replaced by the
effective variance ``mean(y) / rate``.

Divergence: every 10 steps and at the end the chains' state is checked; NaN/Inf or ``|x| > 1e6`` stops the solver
with a :class:`invgen.errors.DivergenceError` naming the step and the option to change (``step_size``, ``eps``).

Start (``init``), the same for every chain unless drawn from the prior:

* ``"fill"`` (default): the solution of the data nearest mid-grey, ``0.5 + A^+ (y - A 0.5)``: ``A^+ y`` on the
  row space of A and 0.5 on its null space (holes of an inpainting mask, unmeasured directions of sensing); a
  constant 0.5 image for a nonlinear operator. Starting the null space at the centre of the image range instead of
  at 0 matters: on a 16x16 box inpainting with the demo GMM, MALA's mean after 1500 steps is 0.004 RMSE from the
  exact posterior mean from ``"fill"`` (the noise floor of 128 samples) and 0.029 from ``"pinv"``;
* ``"pinv"``: ``A^+ y`` (linear operators);
* ``"prior"``: ``decode`` of latent noise for a prior with the generator capability, else its ``sample`` method;
* a tensor ``(B, C, H, W)`` or ``(N, B, C, H, W)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import MissingCapabilityError, RangeError, ShapeError
from invgen.priors.base import capabilities_of
from invgen.solvers.base import check_state, likelihood_grad, stack_batch, unstack_batch

ULA_STEP_FRACTION = 0.05
MALA_STEP_FRACTION = 0.5
TARGET_ACCEPT = 0.574


def _per_item_norm2(t: Tensor) -> Tensor:
    return (t**2).reshape(t.shape[0], -1).sum(1)


def _check_options(steps: int, step_size: float | None, sigma: float | None, who: str) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{who}: steps must be an integer >= 1, got {steps!r}")
    if step_size is not None and not (math.isfinite(float(step_size)) and float(step_size) > 0):
        raise RangeError(f"{who}: step_size must be finite and > 0, got {step_size}")
    if sigma is not None and not (math.isfinite(float(sigma)) and float(sigma) >= 0):
        raise RangeError(f"{who}: sigma must be finite and >= 0, got {sigma}")


def _check_noise(operator: Any, who: str) -> None:
    noise = operator.noise
    if noise.name == "gaussian" and float(noise.std) <= 0:
        raise RangeError(
            f"{who}: needs a likelihood, but the operator's Gaussian noise std is 0; build it with "
            "noise=invgen.noise('gaussian', std=...) > 0"
        )


def effective_variance(operator: Any, y: Tensor) -> float:
    """The variance of the data term: Gaussian ``std^2`` (a joint observation's reference ``gaussian_std()^2``, in the
    whitened units of :func:`operator_norm2`), Poisson ``mean(|y|) / rate`` (floored at 0.01 / rate)."""
    noise = operator.noise
    if noise.name == "gaussian":
        return float(noise.std) ** 2
    std = noise.gaussian_std()
    if std is not None:
        return float(std) ** 2
    rate = getattr(noise, "rate", None)
    if rate is not None:
        return max(float(y.abs().mean()), 1e-2) / float(rate)
    raise TypeError(f"no default step size for {noise.name!r} noise; pass step_size=...")


def operator_norm2(operator: Any, x: Tensor, iters: int = 20) -> float:
    """``||A||^2`` (or ``||J||^2`` of a nonlinear operator at ``x``) by power iteration, with a 2% margin.

    For a joint observation whose noise whitens (:mod:`invgen.operators.joint`) it is ``||W A||^2`` (``||W J||^2``),
    the curvature of the likelihood in the units of its reference std, which :func:`effective_variance` gives.
    """
    gen = torch.Generator(device=x.device).manual_seed(1234)
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    whiten = operator.noise.whiten if operator.noise.whitened else None
    if operator.linear and whiten is None:

        def jtj(u: Tensor) -> Tensor:
            return operator.gram(u)
    elif operator.linear:

        def jtj(u: Tensor) -> Tensor:
            return operator.adjoint(whiten(whiten(operator(u))))
    else:

        def jtj(u: Tensor) -> Tensor:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                out = operator(xg) if whiten is None else whiten(operator(xg))
                w = torch.zeros_like(out, requires_grad=True)
                (jt_w,) = torch.autograd.grad(out, xg, grad_outputs=w, create_graph=True)
                (ju,) = torch.autograd.grad(jt_w, w, grad_outputs=u, retain_graph=True)  # J u, double backward
                (jtju,) = torch.autograd.grad(out, xg, grad_outputs=ju)
            return jtju.detach()

    est = 0.0
    for _ in range(iters):
        v = v / _per_item_norm2(v).sqrt().clamp_min(1e-30).reshape(-1, *([1] * (v.dim() - 1)))
        w = jtj(v)
        est = float((w * v).reshape(v.shape[0], -1).sum(1).max())
        v = w
    return 1.02 * max(est, 1e-12)


def default_step_size(operator: Any, y: Tensor, x: Tensor, fraction: float, who: str = "langevin") -> float:
    """``fraction * s^2 / ||A||^2``: a fraction of the inverse curvature of the log-likelihood (module docstring).

    Raises:
        RangeError: if ``||A||^2`` (``||J||^2`` at ``x``) vanishes, as a nonlinear operator's Jacobian can at a flat
            start (``sketch`` at the mid-grey ``init="fill"``): the step would be unbounded, so none is guessed.
    """
    norm2 = operator_norm2(operator, x)
    if norm2 < 1e-9:
        raise RangeError(
            f"{who}: no default step_size: the curvature of the likelihood vanishes at the start point "
            f"(||J||^2 = {norm2:.3g} for {getattr(operator, 'name', 'the operator')!r}), so the default step "
            f"fraction * s^2 / ||J||^2 would be unbounded; pass step_size=..., or start where the operator is not flat "
            "(init='prior' or an initial tensor)"
        )
    return fraction * effective_variance(operator, y) / norm2


def _start(prior: Any, operator: Any, y: Tensor, init: Any, n: int, generator: torch.Generator, who: str) -> Tensor:
    """Initial states of the ``n * B`` chains, stacked as :func:`stack_batch` lays them out."""
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    if isinstance(init, Tensor):
        check_tensor(init, "init")
        init = init.to(dtype=y.dtype, device=y.device)
        if tuple(init.shape) == x_shape:
            return stack_batch(init, n)
        if tuple(init.shape) == (n, *x_shape):
            return init.reshape(n * x_shape[0], *x_shape[1:]).clone()
        raise ShapeError(f"{who}: init tensor must be {x_shape} or {(n, *x_shape)}, got {tuple(init.shape)}")
    if init == "fill":
        mid = torch.full(x_shape, 0.5, dtype=y.dtype, device=y.device)
        return stack_batch(mid + operator.pinv(y - operator(mid)) if operator.linear else mid, n)
    if init == "pinv":
        if not operator.linear:
            raise TypeError(
                f"{who}: init='pinv' needs a linear operator; {operator.name!r} is nonlinear, pass "
                "init='prior' or an initial tensor"
            )
        return stack_batch(operator.pinv(y), n)
    if init == "prior":
        m = n * x_shape[0]
        if "generator" in getattr(prior, "capabilities", ()):
            z = torch.randn((m, *prior.latent_shape), generator=generator, dtype=y.dtype, device=y.device)
            x = prior.decode(z)
        elif callable(getattr(prior, "sample", None)):
            x = prior.sample(m, generator=generator, dtype=y.dtype, device=y.device)
        else:
            raise TypeError(f"{who}: init='prior' needs a prior with the generator capability or a sample method")
        if tuple(x.shape[1:]) != tuple(x_shape[1:]):
            raise ShapeError(
                f"{who}: the prior draws images of shape {tuple(x.shape[1:])}, the operator needs {tuple(x_shape[1:])}"
            )
        return x.to(dtype=y.dtype, device=y.device)
    raise ValueError(f"{who}: init must be 'fill', 'pinv', 'prior' or a tensor, got {init!r}")


def ula(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
    step_size: float | None = None,
    sigma: float | None = None,
    init: str | Tensor = "fill",
) -> tuple[Tensor, dict[str, Any]]:
    """Unadjusted Langevin algorithm on the posterior: ``x <- x + g grad log p(x | y) + sqrt(2 g) n``.

    Args:
        prior: a prior with the ``score`` capability.
        operator: any invgen operator (linear or not) with a noise model that has a likelihood.
        y: observations.
        n_samples: N chains per observation item (the final state of each is one sample).
        generator: the random generator (noise, and the start for ``init="prior"``).
        steps: number of Langevin steps (one batched score call each).
        step_size: ``g``; default ``0.05 * s^2 / ||A||^2`` (module docstring).
        sigma: noise level of the prior score; default the prior's ``sigma_min`` (0 for exact priors).
        init: ``"fill"``, ``"pinv"``, ``"prior"`` or a tensor (module docstring).

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"step_size": g}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    _check_options(steps, step_size, sigma, "ula")
    check_tensor(y, "y")
    _check_noise(operator, "ula")
    sig = float(getattr(prior, "sigma_min", 0.0) if sigma is None else sigma)
    x = _start(prior, operator, y, init, n_samples, generator, "ula")
    b = y.shape[0]
    g = float(step_size) if step_size is not None else default_step_size(operator, y, x[:b], ULA_STEP_FRACTION, "ula")
    ys = stack_batch(y, n_samples)
    noise_scale = math.sqrt(2 * g)
    for t in range(steps):
        _, grad_lik = likelihood_grad(operator, ys, x)
        drift = prior.score(x, sig) + grad_lik
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x + g * drift + noise_scale * noise
        check_state(x, "ula", t + 1, steps, detail=f"step_size={g:.3g}")
    return unstack_batch(x, n_samples), {"step_size": g}


def mala(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
    burn_in: int | None = None,
    step_size: float | None = None,
    sigma: float | None = None,
    init: str | Tensor = "fill",
    target_accept: float = TARGET_ACCEPT,
) -> tuple[Tensor, dict[str, Any]]:
    """Metropolis-adjusted Langevin algorithm on the posterior, with a per-chain step adapted during burn-in.

    Each step proposes ``x' = x + g grad log p(x | y) + sqrt(2 g) n`` and accepts it with probability
    ``min(1, p(x' | y) q(x | x') / (p(x | y) q(x' | x)))``, ``log p(x | y) = prior.log_prob(x) +
    operator.log_likelihood(y, x) + const``. During the first ``burn_in`` steps each chain's ``log g`` moves by
    ``(t + 1)^-0.6 * (alpha - target_accept)`` (alpha the acceptance probability); it is fixed afterwards.
    NFE: two prior calls per step (``score`` and ``log_prob``, each batched over all chains) plus two at the start.

    Args:
        prior: a prior with the ``score`` and ``log_density`` capabilities (an exact ``log_prob`` makes MALA exact;
            an unnormalised one is fine, a bound is not).
        operator: any invgen operator with a noise model that has a likelihood.
        y: observations.
        n_samples: N chains per observation item (the final state of each is one sample).
        generator: the random generator.
        steps: total number of MALA steps, burn-in included.
        burn_in: adaptation steps (default ``steps // 2``); ``0 <= burn_in < steps``.
        step_size: the initial ``g``; default ``0.5 * s^2 / ||A||^2`` (module docstring).
        sigma: noise level of the prior score used in the proposal's drift (default the prior's ``sigma_min``);
            the accept step always uses the exact ``log_prob``, so any drift keeps MALA exact.
        init: ``"fill"``, ``"pinv"``, ``"prior"`` or a tensor (module docstring).
        target_accept: acceptance rate the adaptation aims at, in (0, 1).

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"acceptance_rate": float (post-burn-in, all chains),
        "step_size": float (mean final step)}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    _check_options(steps, step_size, sigma, "mala")
    burn_in = steps // 2 if burn_in is None else burn_in
    if not isinstance(burn_in, int) or not 0 <= burn_in < steps:
        raise ValueError(f"mala: burn_in must be an integer with 0 <= burn_in < steps = {steps}, got {burn_in!r}")
    if not 0 < float(target_accept) < 1:
        raise RangeError(f"mala: target_accept must lie in (0, 1), got {target_accept}")
    check_tensor(y, "y")
    _check_noise(operator, "mala")
    sig = float(getattr(prior, "sigma_min", 0.0) if sigma is None else sigma)
    x = _start(prior, operator, y, init, n_samples, generator, "mala")
    b = y.shape[0]
    g0 = step_size if step_size is not None else default_step_size(operator, y, x[:b], MALA_STEP_FRACTION, "mala")
    g0 = float(g0)
    ys = stack_batch(y, n_samples)
    m = x.shape[0]
    view = (m, *([1] * (x.dim() - 1)))

    def evaluate(v: Tensor) -> tuple[Tensor, Tensor]:
        ll, grad_lik = likelihood_grad(operator, ys, v)
        return prior.log_prob(v) + ll, prior.score(v, sig) + grad_lik

    log_post, drift = evaluate(x)
    log_g = torch.full((m,), math.log(g0), dtype=x.dtype, device=x.device)
    accepted = torch.zeros(m, dtype=x.dtype, device=x.device)
    for t in range(steps):
        g = log_g.exp().reshape(view)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        prop = x + g * drift + torch.sqrt(2 * g) * noise
        log_post_p, drift_p = evaluate(prop)
        log_fwd = -0.5 * _per_item_norm2(noise)  # log q(x' | x) up to the shared constant
        log_bwd = -_per_item_norm2(x - prop - g * drift_p) / (4 * g.reshape(m))
        log_alpha = log_post_p - log_post + log_bwd - log_fwd
        log_alpha = torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -math.inf))
        u = torch.rand(m, generator=generator, dtype=x.dtype, device=x.device)
        accept = torch.log(u) < log_alpha
        x = torch.where(accept.reshape(view), prop, x)
        log_post = torch.where(accept, log_post_p, log_post)
        drift = torch.where(accept.reshape(view), drift_p, drift)
        if t < burn_in:
            alpha = log_alpha.clamp(max=0.0).exp()
            log_g = log_g + (t + 1) ** -0.6 * (alpha - target_accept)
        else:
            accepted += accept.to(x.dtype)
        check_state(x, "mala", t + 1, steps, detail=f"initial step_size={g0:.3g}")
    rate = float(accepted.mean()) / (steps - burn_in)
    return unstack_batch(x, n_samples), {"acceptance_rate": rate, "step_size": float(log_g.exp().mean())}


def annealed_langevin(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    n_levels: int = 10,
    steps_per_level: int = 100,
    eps: float = 2e-5,
    sigma_max: float = 1.0,
    sigma_min: float = 0.01,
    final_steps: int = 0,
    step_cap: bool = True,
) -> Tensor:
    """Annealed Langevin dynamics on the posterior (Song & Ermon 2019; Jalal et al. 2021 for inverse problems).

    For each level ``s_i`` of the geometric schedule ``sigma_max -> sigma_min`` (``n_levels`` levels), run
    ``steps_per_level`` Langevin steps

        x <- x + a_i (score(x, s_i) + A^T (y - A x) / (sigma_y^2 + s_i^2)) + sqrt(2 a_i) n,  a_i = eps s_i^2 / s_L^2,

    the likelihood's variance inflated by the prior's noise level (Jalal et al.); nonlinear operators differentiate
    ``-||y - A(x)||^2 / (2 (sigma_y^2 + s_i^2))`` with autograd. A joint observation with parts of different Gaussian
    stds (:mod:`invgen.operators.joint`) uses its whitened residual ``whiten(y - A(x))`` and its reference std as
    ``sigma_y``, so the inflation ``s_i^2`` is added in whitened units (exact as ``s_i -> 0``). Then ``final_steps``
    more steps at ``sigma_min`` with the same step ``eps``. The score is ``prior.score(x, s)`` when the prior offers
    ``score``, else
    ``(D(x, s) - x) / s^2`` from its denoiser. Chains start at ``0.5 + sigma_max n``. Each chain returns its final
    state (no final denoising step, which would shrink the samples towards a posterior mean).

    Step cap (``step_cap=True``, the default): ``a_i`` is at most ``1 / (1 / s_i^2 + ||A||^2 / (sigma_y^2 + s_i^2))``,
    the inverse of a bound on the curvature of the level-``i`` posterior (the smoothed prior's ``-Hessian log p_s`` is
    at most ``I / s_i^2``; the likelihood's is ``A^T A / (sigma_y^2 + s_i^2)``; ``||A||^2`` by power iteration, or
    ``||J||^2`` of a nonlinear operator at mid-grey), so ``a_i`` times the curvature stays <= 1 where ULA diverges
    above 2. With the default ``eps`` it binds only when ``||A||^2 > 4`` (``eps / sigma_min^2 = 0.2``), never for
    inpainting, block-average SR, blur or colorization (``||A|| <= 1``); it does for compressed sensing (the
    ``sensing`` operator with m = 200 of 1024 has ``||A||^2`` about 10), where the uncapped chains diverge at the
    high levels (LPIPS 0.67 on MNIST in ``diffusion-cpu-long``). ``step_cap=False`` runs the paper's steps as they are.

    The defaults are Song & Ermon's (L = 10 levels from 1 to 0.01 on [0, 1] images, T = 100 steps per level,
    ``eps = 2e-5``). ULA's bias at the last level is ``O(a_L)`` and the last level's smoothing adds ``sigma_min^2``
    to the prior's variances: a small ``sigma_min`` and ``eps`` with more levels and steps approach the exact
    posterior (tests/test_solvers_diffusion.py pins the settings that reach the noise floor).
    NFE: ``n_levels * steps_per_level + final_steps`` prior calls (score or denoise).

    Args:
        prior: a prior with the ``score`` or the ``denoiser`` capability.
        operator: any invgen operator with Gaussian noise (std >= 0).
        y: observations.
        n_samples: N chains per observation item, batched as ``N * B``.
        generator: the random generator.
        n_levels: number of noise levels L >= 1.
        steps_per_level: Langevin steps per level T >= 1.
        eps: the step at the last level, > 0.
        sigma_max: first noise level.
        sigma_min: last noise level, ``0 < sigma_min <= sigma_max`` (and not below the prior's ``sigma_min``).
        final_steps: extra steps at ``sigma_min``, >= 0.
        step_cap: cap each level's step at the inverse curvature bound (above); False: the paper's steps.

    Returns:
        ``(N, B, C, H, W)`` samples.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    who = "annealed_langevin"
    for name, v, low in (
        ("n_levels", n_levels, 1),
        ("steps_per_level", steps_per_level, 1),
        ("final_steps", final_steps, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{who}: {name} must be an integer >= {low}, got {v!r}")
    if not (math.isfinite(float(eps)) and float(eps) > 0):
        raise RangeError(f"{who}: eps must be finite and > 0, got {eps}")
    if not isinstance(step_cap, bool):
        raise TypeError(f"{who}: step_cap must be True or False, got {step_cap!r}")
    if not (math.isfinite(float(sigma_max)) and 0 < float(sigma_min) <= float(sigma_max)):
        raise RangeError(f"{who}: expected 0 < sigma_min <= sigma_max < inf, got {sigma_min}, {sigma_max}")
    if float(sigma_min) < float(getattr(prior, "sigma_min", 0.0)):
        raise RangeError(f"{who}: sigma_min {sigma_min} is below the prior's sigma_min {prior.sigma_min}")
    check_tensor(y, "y")
    std = operator.noise.gaussian_std()  # a joint observation's reference std: its residuals are whitened below
    if std is None:
        raise TypeError(f"{who} needs Gaussian observation noise, got {operator.noise.name!r}")
    whiten = operator.noise.whiten
    caps = capabilities_of(prior)
    if "score" not in caps and "denoiser" not in caps:
        raise MissingCapabilityError(
            f"solver {who!r} needs the capability 'score' or 'denoiser', which prior "
            f"{getattr(prior, 'name', type(prior).__name__)!r} lacks (it offers {sorted(caps) or 'none'})"
        )
    use_score = "score" in caps
    var_y = float(std) ** 2
    levels = torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n_levels, dtype=torch.float64).tolist()
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    m = n_samples * x_shape[0]
    x = 0.5 + float(sigma_max) * torch.randn((m, *x_shape[1:]), generator=generator, dtype=y.dtype, device=y.device)
    ys = stack_batch(y, n_samples)
    plan = [(s, steps_per_level) for s in levels] + ([(levels[-1], final_steps)] if final_steps else [])
    # ||A||^2 of the step cap's curvature bound (at mid-grey, docstring); None: the paper's steps
    norm2 = None
    if step_cap:
        norm2 = operator_norm2(operator, torch.full((1, *x_shape[1:]), 0.5, dtype=y.dtype, device=y.device))
    done, total = 0, sum(k for _, k in plan)
    for s, k in plan:
        a = float(eps) * s**2 / levels[-1] ** 2
        var = var_y + s**2
        if norm2 is not None:
            a = min(a, 1.0 / (1.0 / s**2 + norm2 / var))
        for _ in range(k):
            score = prior.score(x, s) if use_score else (prior.denoise(x, s) - x) / s**2
            if operator.linear:
                r = ys - operator(x)
                lik = operator.adjoint(whiten(whiten(r)) if operator.noise.whitened else r) / var
            else:
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    (lik,) = torch.autograd.grad(-whiten(ys - operator(xg)).pow(2).sum() / (2 * var), xg)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + a * (score + lik) + math.sqrt(2 * a) * noise
            done += 1
            check_state(x, who, done, total, detail=f"eps={eps}, step at this level {a:.3g}")
    return unstack_batch(x, n_samples)
