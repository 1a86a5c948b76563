"""Latent-space solvers for generator priors: MAP by optimisation (CSGM), and MALA / HMC sampling of the latent.

A prior with the ``generator`` capability defines ``x = G(z)`` with ``z ~ N(0, I)`` (``prior.decode``,
``prior.latent_shape``). An inverse problem then has the latent posterior

    p(z | y) ∝ N(z; 0, I) p(y | G(z)),   U(z) = -log p(z | y) = ||z||^2 / 2 - log p(y | G(z)) + const,

and ``G`` pushes it forward to the image posterior. The likelihood is ``operator.log_likelihood``, so every noise
model and every differentiable operator (the nonlinear ``sketch`` too) works; gradients go through ``decode`` by
autograd. ``N`` samples per observation item run batched as ``N * B`` latents (:func:`stack_batch` layout), one
``decode`` call (one NFE) per evaluation of ``U`` and its gradient for all of them.

* :func:`latent_map` minimises ``U`` with Adam (compressed sensing with generative models, CSGM: Bora, Jalal, Price
  & Dimakis, ICML 2017, whose ``||A G(z) - y||^2 + lambda ||z||^2`` is ``2 s^2 U`` for Gaussian noise of std ``s``,
  i.e. ``lambda = s^2``). ``U`` is non-convex for a non-linear ``G``, hence random restarts. Noiseless Gaussian
  observations (std 0) have no finite ``U``; ``latent_map`` then minimises ``||y - A(G(z))||^2 / 2`` (CSGM with
  ``lambda = 0``) and the samplers raise an error.
* :func:`latent_mala` (Roberts & Tweedie 1996) and :func:`latent_hmc` (Duane et al. 1987; Neal 2011) sample
  ``p(z | y)`` and return ``G(z)`` of the chains' final states. Both are exact in the limit: each move is accepted with
  the Metropolis-Hastings probability computed from ``U``. Each chain's step is first set by the doubling / halving
  heuristic of Hoffman & Gelman (2014, Algorithm 4), then adapted during burn-in by Robbins-Monro on its log
  (``log g += (t + 1)^-0.6 (alpha - target)``, as pixel-space :func:`invgen.solvers.langevin.mala`) and frozen
  afterwards, so the post-burn-in chain is a valid MCMC chain. Targets: acceptance 0.574 for MALA (Roberts &
  Rosenthal 1998), 0.65 for HMC (Beskos, Pillai, Roberts, Sanz-Serna & Stuart 2013).

A latent posterior is often worse conditioned than the pixel one: ``G`` whitens the prior, so a likelihood much
sharper than the prior stretches ``U``'s curvature from 1 (directions the data do not see) to about
``||A J||^2 / s^2`` (``J`` the Jacobian of ``G``). MALA's mixing time grows with that ratio, HMC's (in
trajectories) with its square root (Neal 2011, section 5.4.4); tests/test_solvers_latent.py measures both.

Starts (``init``), a latent per chain / restart:

* ``"prior"`` (default): ``z ~ N(0, I)``, drawn independently for every chain and restart;
* ``"encoder"``: ``prior.encode(clamp(A^+ y, 0, 1))`` for a prior with an encoder (VAE, flow, analytic Gaussian)
  and a linear operator, the same for every chain (clamped: encoders take clean images, and a flow's exact inverse
  sends the noisy out-of-range pixels of ``A^+ y`` far into the latent tails);
* ``"map"`` (MALA / HMC only): the end of a short :func:`latent_map` run per chain (``map_steps`` Adam steps from
  independent prior draws): chains start near a posterior mode, which saves burn-in when the data are strong;
* a tensor of latents ``(B, *latent_shape)`` or ``(N, B, *latent_shape)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_tensor
from invgen.errors import RangeError, ShapeError
from invgen.solvers.base import check_steps, require, stack_batch, unstack_batch

NEEDS = ("generator",)
MALA_TARGET = 0.574
HMC_TARGET = 0.65
INITIAL_STEP = 0.1  # where the step heuristic starts: U's prior part has unit curvature
LR_FLOOR = 0.001  # latent_map's cosine schedule decays lr to LR_FLOOR * lr
BETA2 = 0.9


def _norm2(t: Tensor) -> Tensor:
    return (t**2).reshape(t.shape[0], -1).sum(1)


def _latent_shape(prior: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in prior.latent_shape)


def _check_noise(operator: Any, who: str) -> None:
    if operator.noise.name == "gaussian" and float(operator.noise.std) <= 0:
        raise RangeError(
            f"{who}: needs a likelihood, but the operator's Gaussian noise std is 0 (the latent posterior is then "
            "degenerate); build the operator with noise=invgen.noise('gaussian', std=...) > 0, or use latent_map, "
            "which falls back to the data-consistency objective"
        )


def _evaluator(prior: Any, operator: Any, y: Tensor, n: int, who: str, lam: float | None = None) -> Any:
    """``evaluate(z) -> (U(z), grad U(z), G(z))`` for ``n * B`` stacked latents: one batched ``decode`` call.

    ``U(z) = ||z||^2 / 2 - log p(y | G(z))``; for noiseless Gaussian observations (std 0, only reached from
    :func:`latent_map`) the data-consistency objective ``||y - A(G(z))||^2 / 2`` alone; with ``lam`` (only from
    :func:`latent_map`) CSGM's ``||y - A(G(z))||^2 + lam ||z||^2``.
    """
    ys = stack_batch(y, n)
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    noiseless = operator.noise.name == "gaussian" and float(operator.noise.std) == 0

    whiten = operator.noise.whiten  # the identity but for a joint observation (invgen.operators.joint)

    def objective(z: Tensor, x: Tensor) -> Tensor:
        if lam is not None:
            return _norm2(whiten(ys - operator(x))) + lam * _norm2(z)
        if noiseless:
            return 0.5 * _norm2(whiten(ys - operator(x)))
        return 0.5 * _norm2(z) - operator.log_likelihood(ys, x)

    def evaluate(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            x = prior.decode(zg)
            if tuple(x.shape[1:]) != x_shape[1:]:
                raise ShapeError(
                    f"{who}: the prior decodes images of shape {tuple(x.shape[1:])}, the operator needs "
                    f"{x_shape[1:]} for y of shape {tuple(y.shape)}"
                )
            # a generator whose inverse diverges (a flow far from its data) decodes some latents to NaN/Inf: those
            # get U = +inf and a zero gradient (the items are independent), and the callers step back from them
            finite = torch.isfinite(x.detach()).flatten(1).all(1)
            if not bool(finite.all()):
                x = torch.where(finite.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))
            u = objective(zg, x)
            (g,) = torch.autograd.grad(u.sum(), zg)
        if not bool(finite.all()):
            u = torch.where(finite, u.detach(), torch.full_like(u, math.inf))
            g = torch.where(finite.view(-1, *([1] * (g.dim() - 1))), g, torch.zeros_like(g))
        return u.detach(), g, x.detach()

    return evaluate


def _start(prior: Any, operator: Any, y: Tensor, init: Any, n: int, generator: torch.Generator, who: str) -> Tensor:
    """Initial latents of ``n * B`` chains / restarts in the :func:`stack_batch` layout, ``(n * B, *latent_shape)``."""
    lat = _latent_shape(prior)
    b = y.shape[0]
    if isinstance(init, Tensor):
        check_tensor(init, "init")
        init = init.to(dtype=y.dtype, device=y.device)
        if tuple(init.shape) == (b, *lat):
            return stack_batch(init, n)
        if tuple(init.shape) == (n, b, *lat):
            return init.reshape(n * b, *lat).clone()
        raise ShapeError(
            f"{who}: an init tensor holds latents of shape {(b, *lat)} or {(n, b, *lat)}, got {tuple(init.shape)}"
        )
    if init == "prior":
        return torch.randn((n * b, *lat), generator=generator, dtype=y.dtype, device=y.device)
    if init == "encoder":
        if not getattr(operator, "linear", False):
            raise TypeError(
                f"{who}: init='encoder' encodes A^+ y and needs a linear operator; {operator.name!r} is nonlinear, "
                "use init='prior'"
            )
        name = getattr(prior, "name", type(prior).__name__)
        try:
            z = prior.encode(operator.pinv(y).clamp(0.0, 1.0))
        except (NotImplementedError, AttributeError) as exc:
            raise TypeError(
                f"{who}: init='encoder' needs a prior with an encoder, and prior {name!r} has none ({exc}); use "
                "init='prior'"
            ) from None
        z = z.to(dtype=y.dtype, device=y.device)
        if tuple(z.shape) != (b, *lat):
            raise ShapeError(f"{who}: prior {name!r} encoded latents of shape {tuple(z.shape)}, expected {(b, *lat)}")
        return stack_batch(z, n)
    choices = "'prior', 'encoder'" if who == "latent_map" else "'prior', 'encoder', 'map'"
    raise ValueError(f"{who}: init must be {choices} or a tensor of latents, got {init!r}")


def _check_positive(value: Any, name: str, who: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise RangeError(f"{who}: {name} must be finite and > 0, got {value!r}")
    return v


def _check_count(value: Any, name: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{who}: {name} must be an integer >= {low}, got {value!r}")
    return value


def _adam(evaluate: Any, z: Tensor, steps: int, lr: float) -> tuple[Tensor, Tensor]:
    """``steps`` Adam steps on ``U`` (Kingma & Ba 2015), lr cosine-decayed from ``lr`` to ``LR_FLOOR * lr``; returns
    the last iterate and the one before it.

    A latent whose decode is not finite (``U = +inf``: a flow's inverse can diverge) steps back to its previous
    iterate and continues with half its step; a non-finite start is an error.

    Adam is elementwise, so the batched latents are independent problems. ``beta2 = 0.9`` instead of the usual
    0.999: the objective is deterministic (no minibatch noise to average), and a long second-moment memory keeps the
    large gradients of the first steps, which slows the end of the descent. On the 16-pixel Gaussian test problems
    (latent curvature ratio up to 50) the worst of 128 starts on sensing is 3e-2 (lr 0.05) or 1e-3 (lr 0.1) from
    the optimum after 1000 steps with 0.999, within 2e-5 after 300 steps with 0.9.
    """
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    b1, b2, eps = 0.9, BETA2, 1e-8
    shape = (-1, *([1] * (z.dim() - 1)))
    scale = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)  # per latent, halved at each step back
    z_prev = g_prev = None
    for t in range(1, steps + 1):
        u, g, _ = evaluate(z)
        bad = ~torch.isfinite(u)
        if bool(bad.any()):
            if z_prev is None:
                raise FloatingPointError(
                    f"the prior decodes {int(bad.sum())} of the starting latents to non-finite images; start elsewhere"
                )
            z = torch.where(bad.view(shape), z_prev, z)  # step back, with half the step from now on
            g = torch.where(bad.view(shape), g_prev, g)
            scale = torch.where(bad, 0.5 * scale, scale)
        z_prev, g_prev = z, g
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        rate = lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * (t - 1) / steps)))
        z = z - rate * scale.view(shape) * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return z, z_prev


def latent_map(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
    lr: float = 0.05,
    restarts: int = 1,
    init: str | Tensor = "prior",
    lam: float | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Latent MAP estimate (CSGM, Bora et al. 2017): ``x = G(z*)``, ``z* = argmin ||z||^2 / 2 - log p(y | G(z))``.

    For Gaussian noise of std ``s`` the objective is ``||y - A(G(z))||^2 / (2 s^2) + ||z||^2 / 2``; for a noiseless
    operator (std 0) it falls back to the data term ``||y - A(G(z))||^2 / 2`` alone (CSGM with ``lambda = 0``: the
    prior acts only through the range of ``G`` and the start). ``lam`` replaces both by the paper's objective
    ``||y - A(G(z))||^2 + lam ||z||^2`` with a weight of one's choice (Gaussian noise only; the posterior MAP is
    ``lam = s^2``, the paper's MNIST runs use 0.1 with ``A_ij ~ N(0, 1/m)``). Minimised by Adam (betas 0.9 / 0.9, see
    :func:`_adam`) with a cosine-decayed learning rate.

    What N means: the ``n_samples`` samples of an item are independent optimisations from independent starts, each
    the best (lowest objective) of ``restarts`` random restarts. They differ only where ``U`` has several local
    minima (a non-linear ``G``); for a convex ``U`` they agree. ``extras["best"]`` says which is the overall best.
    All ``restarts * N * B`` problems are batched into one ``decode`` call per step.
    NFE: ``steps + 1`` decodes (the last gives the samples), plus one ``encode`` for ``init="encoder"``.

    Args:
        prior: a prior with the ``generator`` capability.
        operator: any invgen operator (linear or not) with any noise model.
        y: observations.
        n_samples: N estimates per observation item.
        generator: the random generator (random starts).
        steps: Adam steps.
        lr: Adam's initial learning rate (on the unit-scale latent), decayed to ``lr / 100`` along a cosine.
        restarts: random restarts per sample, >= 1; the lowest-objective one is kept.
        init: ``"prior"`` (independent ``z ~ N(0, I)`` for every sample and restart), ``"encoder"``
            (``encode(clamp(A^+ y, 0, 1))`` for all) or a tensor of latents ``(B, *latent_shape)`` (shared) or
            ``(N, B, *latent_shape)`` (one per sample), the same for every restart (module docstring).
        lam: None (the posterior objective), or the weight of CSGM's ``||y - A(G(z))||^2 + lam ||z||^2``, >= 0.

    Returns:
        ``(N, B, C, H, W)`` images ``G(z*)`` and extras ``{"objective": (N, B) final objective of each sample (with
        the likelihood's constants), "best": (B,) index of the sample of lowest objective per item, "latents":
        (N, B, *latent_shape)}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.

    Example:
        >>> post = invgen.solve(y, op, invgen.prior("gaussian", image_shape=(1, 4, 4)), solver="latent_map")
    """
    who = "latent_map"
    require(prior, NEEDS, who)
    check_tensor(y, "y")
    steps = check_steps(steps, who)
    restarts = _check_count(restarts, "restarts", who)
    lr = _check_positive(lr, "lr", who)
    if lam is not None:
        lam = float(lam)
        if not math.isfinite(lam) or lam < 0:
            raise RangeError(f"{who}: lam must be finite and >= 0 (or None), got {lam}")
        if operator.noise.gaussian_std() is None:  # a joint observation of Gaussian parts: whitened residuals
            raise TypeError(
                f"{who}: lam (the least-squares objective) needs Gaussian noise, got {operator.noise.name!r}"
            )
    n, b = n_samples, y.shape[0]
    k = restarts * n
    evaluate = _evaluator(prior, operator, y, k, who, lam)
    if isinstance(init, Tensor):  # shared or per sample, the same for every restart
        z0 = stack_batch(_start(prior, operator, y, init, n, generator, who), restarts)
    else:
        z0 = _start(prior, operator, y, init, k, generator, who)
    z, z_prev = _adam(evaluate, z0, steps, lr)
    u, _, x = evaluate(z)
    bad = ~torch.isfinite(u)
    if bool(bad.any()):  # the last step diverged for some latents: keep the iterate before it
        z = torch.where(bad.view(-1, *([1] * (z.dim() - 1))), z_prev, z)
        u, _, x = evaluate(z)
    u = u.reshape(restarts, n, b)
    pick = u.argmin(0)  # (N, B): the best restart of each sample
    x = x.reshape(restarts, n, b, *x.shape[1:])
    z = z.reshape(restarts, n, b, *z.shape[1:])
    ni, bi = torch.meshgrid(torch.arange(n, device=u.device), torch.arange(b, device=u.device), indexing="ij")
    objective = u[pick, ni, bi]
    return x[pick, ni, bi], {"objective": objective, "best": objective.argmin(0), "latents": z[pick, ni, bi]}


def _mcmc_start(
    prior: Any,
    operator: Any,
    y: Tensor,
    init: Any,
    n: int,
    generator: torch.Generator,
    map_steps: int,
    who: str,
) -> Tensor:
    if isinstance(init, str) and init == "map":
        _, extras = latent_map(prior, operator, y, n_samples=n, generator=generator, steps=map_steps)
        return extras["latents"].reshape(n * y.shape[0], *_latent_shape(prior))
    return _start(prior, operator, y, init, n, generator, who)


def _check_mcmc(
    steps: Any, burn_in: Any, step_size: Any, target_accept: Any, map_steps: Any, who: str
) -> tuple[int, int]:
    steps = check_steps(steps, who)
    burn_in = steps // 2 if burn_in is None else burn_in
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in < steps:
        raise ValueError(f"{who}: burn_in must be an integer with 0 <= burn_in < steps = {steps}, got {burn_in!r}")
    if step_size is not None:
        _check_positive(step_size, "step_size", who)
    if not 0 < float(target_accept) < 1:
        raise RangeError(f"{who}: target_accept must lie in (0, 1), got {target_accept}")
    _check_count(map_steps, "map_steps", who)
    return steps, burn_in


def _finite(log_alpha: Tensor) -> Tensor:
    return torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -math.inf))


def _initial_log_step(trial: Any, m: Tensor | int, like: Tensor, g0: float, iters: int = 40) -> Tensor:
    """Per-chain ``log`` step of Hoffman & Gelman (2014, Algorithm 4): double (halve) the step while one trial move
    is accepted with probability above (below) 1/2, stop at the crossing. ``trial(log_g) -> log_alpha`` per chain.
    """
    half = math.log(0.5)
    log_g = torch.full((int(m),), math.log(g0), dtype=like.dtype, device=like.device)
    up = trial(log_g) > half
    active = torch.ones_like(up)
    step = torch.where(up, math.log(2.0), -math.log(2.0)).to(like.dtype)
    for _ in range(iters):
        if not bool(active.any()):
            break
        log_g = torch.where(active, log_g + step, log_g)
        la = trial(log_g)
        active = active & ((la > half) == up)
    return log_g


def latent_mala(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 1000,
    burn_in: int | None = None,
    step_size: float | None = None,
    init: str | Tensor = "prior",
    target_accept: float = MALA_TARGET,
    map_steps: int = 200,
) -> tuple[Tensor, dict[str, Any]]:
    """Metropolis-adjusted Langevin on the latent posterior ``p(z | y)``; returns ``G(z)`` of the final states.

    Each step proposes ``z' = z - g grad U(z) + sqrt(2 g) n`` and accepts it with probability
    ``min(1, exp(U(z) - U(z')) q(z | z') / q(z' | z))`` (module docstring for ``U`` and the step adaptation).
    NFE: ``steps + 1`` decodes, plus about ``log2`` of the step's range for the initial step heuristic (none when
    ``step_size`` is given), plus ``map_steps + 1`` for ``init="map"``.

    Args:
        prior: a prior with the ``generator`` capability.
        operator: any invgen operator with a noise model that has a likelihood (Gaussian noise needs std > 0).
        y: observations.
        n_samples: N chains per observation item (the final state of each is one sample).
        generator: the random generator.
        steps: total number of MALA steps, burn-in included.
        burn_in: adaptation steps (default ``steps // 2``); ``0 <= burn_in < steps``.
        step_size: the initial ``g`` of every chain; default: the Hoffman-Gelman heuristic per chain from 0.1.
        init: ``"prior"``, ``"encoder"``, ``"map"`` or a tensor of latents (module docstring).
        target_accept: acceptance rate the adaptation aims at, in (0, 1).
        map_steps: Adam steps of the ``init="map"`` start.

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"acceptance_rate": float (post-burn-in, all chains),
        "step_size": float (mean final step), "latents": (N, B, *latent_shape) final states}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    who = "latent_mala"
    require(prior, NEEDS, who)
    check_tensor(y, "y")
    steps, burn_in = _check_mcmc(steps, burn_in, step_size, target_accept, map_steps, who)
    _check_noise(operator, who)
    n = n_samples
    evaluate = _evaluator(prior, operator, y, n, who)
    z = _mcmc_start(prior, operator, y, init, n, generator, map_steps, who)
    m = z.shape[0]
    view = (m, *([1] * (z.dim() - 1)))
    u, grad, x = evaluate(z)

    def propose(log_g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        g = log_g.exp().reshape(view)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        prop = z - g * grad + torch.sqrt(2 * g) * noise
        u_p, grad_p, x_p = evaluate(prop)
        log_fwd = -0.5 * _norm2(noise)  # log q(z' | z) up to the shared constant
        log_bwd = -_norm2(z - prop + g * grad_p) / (4 * g.reshape(m))
        return prop, u_p, grad_p, x_p, _finite(u - u_p + log_bwd - log_fwd)

    if step_size is None:
        log_g = _initial_log_step(lambda lg: propose(lg)[-1], m, z, INITIAL_STEP)
    else:
        log_g = torch.full((m,), math.log(float(step_size)), dtype=z.dtype, device=z.device)
    accepted = torch.zeros(m, dtype=z.dtype, device=z.device)
    for t in range(steps):
        prop, u_p, grad_p, x_p, log_alpha = propose(log_g)
        u_rand = torch.rand(m, generator=generator, dtype=z.dtype, device=z.device)
        accept = torch.log(u_rand) < log_alpha
        z = torch.where(accept.reshape(view), prop, z)
        grad = torch.where(accept.reshape(view), grad_p, grad)
        x = torch.where(accept.reshape(-1, *([1] * (x.dim() - 1))), x_p, x)
        u = torch.where(accept, u_p, u)
        if t < burn_in:
            log_g = log_g + (t + 1) ** -0.6 * (log_alpha.clamp(max=0.0).exp() - float(target_accept))
        else:
            accepted += accept.to(z.dtype)
    rate = float(accepted.mean()) / (steps - burn_in)
    extras = {"acceptance_rate": rate, "step_size": float(log_g.exp().mean()), "latents": unstack_batch(z, n)}
    return unstack_batch(x, n), extras


def latent_hmc(
    prior: Any,
    operator: Any,
    y: Tensor,
    *,
    n_samples: int,
    generator: torch.Generator,
    steps: int = 200,
    burn_in: int | None = None,
    leapfrog: int = 10,
    step_size: float | None = None,
    jitter: float = 0.2,
    init: str | Tensor = "prior",
    target_accept: float = HMC_TARGET,
    map_steps: int = 200,
) -> tuple[Tensor, dict[str, Any]]:
    """Hamiltonian Monte Carlo on the latent posterior ``p(z | y)``; returns ``G(z)`` of the final states.

    Each iteration draws a momentum ``p ~ N(0, I)``, runs ``leapfrog`` leapfrog steps of size ``e`` on
    ``H(z, p) = U(z) + ||p||^2 / 2`` and accepts the end point with probability ``min(1, exp(H - H'))`` (Neal 2011).
    The step of each iteration is the chain's step times a uniform factor in ``[1 - jitter, 1 + jitter]``, which
    keeps a fixed trajectory length from resonating with a period of the target (Neal 2011, section 5.4.2.2).
    The chain's step is set and adapted as in the module docstring (target 0.65).
    NFE: ``steps * leapfrog + 1`` decodes, plus the initial step heuristic (one leapfrog step per trial, none when
    ``step_size`` is given), plus ``map_steps + 1`` for ``init="map"``.

    Args:
        prior: a prior with the ``generator`` capability.
        operator: any invgen operator with a noise model that has a likelihood (Gaussian noise needs std > 0).
        y: observations.
        n_samples: N chains per observation item (the final state of each is one sample).
        generator: the random generator.
        steps: HMC iterations, burn-in included.
        burn_in: adaptation iterations (default ``steps // 2``); ``0 <= burn_in < steps``.
        leapfrog: leapfrog steps per iteration, L >= 1 (L = 1 is MALA with ``g = e^2 / 2``).
        step_size: the initial ``e`` of every chain; default: the Hoffman-Gelman heuristic per chain from 0.1.
        jitter: relative jitter of the step per iteration, in [0, 1).
        init: ``"prior"``, ``"encoder"``, ``"map"`` or a tensor of latents (module docstring).
        target_accept: acceptance rate the adaptation aims at, in (0, 1).
        map_steps: Adam steps of the ``init="map"`` start.

    Returns:
        ``(N, B, C, H, W)`` samples and extras ``{"acceptance_rate": float (post-burn-in, all chains),
        "step_size": float (mean final step), "latents": (N, B, *latent_shape) final states}``.

    Shape:
        y: ``(B, ...)`` as the operator produces it.
    """
    who = "latent_hmc"
    require(prior, NEEDS, who)
    check_tensor(y, "y")
    steps, burn_in = _check_mcmc(steps, burn_in, step_size, target_accept, map_steps, who)
    leapfrog = _check_count(leapfrog, "leapfrog", who)
    jitter = float(jitter)
    if not 0 <= jitter < 1:
        raise RangeError(f"{who}: jitter must lie in [0, 1), got {jitter}")
    _check_noise(operator, who)
    n = n_samples
    evaluate = _evaluator(prior, operator, y, n, who)
    z = _mcmc_start(prior, operator, y, init, n, generator, map_steps, who)
    m = z.shape[0]
    view = (m, *([1] * (z.dim() - 1)))
    u, grad, x = evaluate(z)

    def trajectory(e: Tensor, n_leap: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        e = e.reshape(view)
        p = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        h0 = u + 0.5 * _norm2(p)
        zt, gt, pt = z, grad, p
        for _ in range(n_leap):
            pt = pt - 0.5 * e * gt
            zt = zt + e * pt
            ut, gt, xt = evaluate(zt)
            pt = pt - 0.5 * e * gt
        return zt, ut, gt, xt, _finite(h0 - ut - 0.5 * _norm2(pt))

    if step_size is None:
        log_e = _initial_log_step(lambda le: trajectory(le.exp(), 1)[-1], m, z, INITIAL_STEP)
    else:
        log_e = torch.full((m,), math.log(float(step_size)), dtype=z.dtype, device=z.device)
    accepted = torch.zeros(m, dtype=z.dtype, device=z.device)
    for t in range(steps):
        factor = 1 + jitter * (2 * torch.rand(m, generator=generator, dtype=z.dtype, device=z.device) - 1)
        prop, u_p, grad_p, x_p, log_alpha = trajectory(log_e.exp() * factor, leapfrog)
        u_rand = torch.rand(m, generator=generator, dtype=z.dtype, device=z.device)
        accept = torch.log(u_rand) < log_alpha
        z = torch.where(accept.reshape(view), prop, z)
        grad = torch.where(accept.reshape(view), grad_p, grad)
        x = torch.where(accept.reshape(-1, *([1] * (x.dim() - 1))), x_p, x)
        u = torch.where(accept, u_p, u)
        if t < burn_in:
            log_e = log_e + (t + 1) ** -0.6 * (log_alpha.clamp(max=0.0).exp() - float(target_accept))
        else:
            accepted += accept.to(z.dtype)
    rate = float(accepted.mean()) / (steps - burn_in)
    extras = {"acceptance_rate": rate, "step_size": float(log_e.exp().mean()), "latents": unstack_batch(z, n)}
    return unstack_batch(x, n), extras
