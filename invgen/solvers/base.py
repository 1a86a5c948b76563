"""The thin solver object and helpers shared by the sampler functions.

A sampler is a plain function ``fn(prior, operator, y, *, n_samples, generator, **options)`` returning posterior
samples ``(N, B, C, H, W)`` (optionally with a dict of extras, e.g. an acceptance rate). A :class:`Solver` only holds
its name, the capabilities it needs and its options; ``invgen.solve`` runs it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invgen.errors import DivergenceError, MissingCapabilityError, RangeError
from invgen.priors.base import capabilities_of

SamplerFn = Callable[..., Tensor | tuple[Tensor, dict[str, Any]]]
_RESERVED = ("prior", "operator", "y", "n_samples", "generator")


class Solver:
    """A named configuration of a sampler function.

    Args:
        name: registry name.
        fn: the sampler function.
        needs: capabilities the prior must offer.
        **options: keyword options of ``fn`` (steps, step sizes, ...); unknown ones raise ``TypeError``.
    """

    def __init__(self, name: str, fn: SamplerFn, needs: tuple[str, ...] = (), **options: Any) -> None:
        params = inspect.signature(fn).parameters
        allowed = [p for p in params if p not in _RESERVED and params[p].kind is inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"solver {name!r} got unknown option(s) {unknown}; its options are {allowed}")
        self.name = name
        self.fn = fn
        self.needs = tuple(needs)
        self.options = dict(options)

    def defaults(self) -> dict[str, Any]:
        """Every option with its default (the paper's value where the algorithm has one)."""
        params = inspect.signature(self.fn).parameters
        return {
            k: p.default
            for k, p in params.items()
            if k not in _RESERVED and p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect._empty
        }

    def config(self) -> dict[str, Any]:
        """Name and effective options, enough to rebuild the solver with ``invgen.solver(**config)``."""
        return {"name": self.name, **self.defaults(), **self.options}

    def __call__(
        self, prior: Any, operator: Any, y: Tensor, *, n_samples: int, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        require(prior, self.needs, self.name)
        out = self.fn(prior, operator, y, n_samples=n_samples, generator=generator, **self.options)
        samples, extras = out if isinstance(out, tuple) else (out, {})
        return samples, extras

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Solver({self.name!r}{', ' if opts else ''}{opts})"


def require(prior: Any, needs: tuple[str, ...], solver_name: str) -> None:
    """Raise :class:`MissingCapabilityError` naming what is missing and which solvers would work."""
    caps = capabilities_of(prior)
    missing = [n for n in needs if n not in caps]
    if not missing:
        return
    from invgen import registry

    usable = sorted(n for n, e in registry.entries("solvers").items() if set(e.meta.get("needs", ())) <= caps)
    raise MissingCapabilityError(
        f"solver {solver_name!r} needs the {'capabilities' if len(missing) > 1 else 'capability'} "
        f"{' and '.join(repr(m) for m in missing)}, which prior "
        f"{getattr(prior, 'name', type(prior).__name__)!r} lacks (it offers {sorted(caps) or 'none'}); "
        f"solvers that work with it: {', '.join(usable) or 'none'}"
    )


def stack_batch(t: Tensor, n: int) -> Tensor:
    """Repeat a batch ``(B, ...)`` to ``(n * B, ...)``, item ``k * B + b`` being a copy of item ``b``."""
    return t.repeat(n, *([1] * (t.dim() - 1)))


def unstack_batch(t: Tensor, n: int) -> Tensor:
    """Inverse layout of :func:`stack_batch`: ``(n * B, ...)`` -> ``(n, B, ...)``."""
    return t.reshape(n, t.shape[0] // n, *t.shape[1:])


def check_steps(steps: Any, who: str) -> int:
    """``steps`` as an int >= 1, else a ``ValueError`` naming the solver."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{who}: steps must be an integer >= 1, got {steps!r}")
    return steps


def check_unit(value: Any, name: str, who: str) -> float:
    """A float in [0, 1] (``eta``, ``zeta``), else a ``RangeError`` (a ``ValueError``)."""
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise RangeError(f"{who}: {name} must lie in [0, 1], got {value!r}")
    return v


def require_linear(operator: Any, solver_name: str) -> None:
    """Raise ``TypeError`` unless the operator is linear."""
    if not getattr(operator, "linear", False):
        raise TypeError(f"solver {solver_name!r} needs a linear operator, got the nonlinear {operator.name!r}")


def linear_gaussian_std(operator: Any, who: str, alternative: str = "dps") -> float:
    """Raise unless ``operator`` is linear with Gaussian noise (errors name ``who`` and a solver that would work);
    return the noise std (may be 0)."""
    if not getattr(operator, "linear", False):
        raise TypeError(
            f"{who}: needs a linear operator; {getattr(operator, 'name', type(operator).__name__)!r} is nonlinear "
            f"(use {alternative}, which differentiates any operator)"
        )
    if operator.noise.name != "gaussian":
        raise TypeError(f"{who}: needs Gaussian observation noise, got {operator.noise.name!r}")
    return float(operator.noise.std)


def gaussian_std(operator: Any, solver_name: str) -> float:
    """The operator's Gaussian noise std, raising a clear error for other or zero noise."""
    std = getattr(operator.noise, "std", None)
    if operator.noise.name != "gaussian" or std is None:
        raise TypeError(f"solver {solver_name!r} needs Gaussian observation noise, got {operator.noise.name!r}")
    if std <= 0:
        raise ValueError(
            f"solver {solver_name!r} needs a Gaussian noise std > 0, got {std}; build the operator with "
            "noise=invgen.noise('gaussian', std=...)"
        )
    return float(std)


def likelihood_grad(operator: Any, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(log p(y | x), grad_x log p(y | x))`` per item, for any operator and noise model.

    Linear operators with Gaussian noise use the closed form ``A^T (y - A x) / std^2``; anything else goes through
    autograd of ``operator.log_likelihood``.
    """
    if operator.linear and operator.noise.name == "gaussian" and operator.noise.std > 0:
        ax = operator(x)
        ll = operator.noise.log_likelihood(y, ax)
        return ll, operator.adjoint(operator.noise.grad_log_likelihood(y, ax))
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        ll = operator.log_likelihood(y, xg)
        (g,) = torch.autograd.grad(ll.sum(), xg)
    return ll.detach(), g


# -- divergence -----------------------------------------------------------------------------------------------------
# What to change when a solver's chains diverge, by solver name: its step-size, guidance-scale or step-count options.
DIVERGENCE_ADVICE: dict[str, str] = {
    "ula": "use a smaller step_size (or leave it unset: the default is 0.05 s^2 / ||A||^2)",
    "mala": "use a smaller initial step_size or a longer burn_in (the step adapts during burn-in)",
    "annealed_langevin": "use a smaller eps, keep step_cap=True, or lower sigma_max",
    "dps": "use a smaller zeta (the guidance step) or guidance='squared', or more steps",
    "pigdm": "use more steps or clip=True",
    "diffpir": "use a smaller zeta or lam, or more steps",
    "ddrm": "use more steps or clip=True",
    "ddnm": "use more steps or clip=True",
    "mmps": "use more steps or linear_iters, or clip=True",
    "daps": "use a smaller lr, keep step_cap=True, or more annealing_steps",
    "pnp_dm": "use a smaller langevin_step or more langevin_steps",
    "red_diff": "use a smaller lr or lam",
    "repaint": "use more steps or clip=True",
    "latent_map": "use a smaller lr",
    "latent_mala": "use a smaller initial step_size or a longer burn_in",
    "latent_hmc": "use a smaller initial step_size, fewer leapfrog steps or a longer burn_in",
    "tds": "use more steps or particles",
    "mcgdiff": "use more steps or particles",
    "fps": "use more steps or particles",
}
GENERIC_ADVICE = "use a smaller step size (step_size, zeta, lr or eps: whichever the solver has) or more steps"
# |x| above this is an explosion for images on the [0, 1] scale (solvers stop there instead of overflowing later)
DIVERGENCE_LIMIT = 1e6
# how often the loops check their state (each check is one device sync); the last step is always checked
CHECK_EVERY = 10


def divergence_advice(solver_name: str) -> str:
    """Which option to change when ``solver_name`` diverges (:data:`DIVERGENCE_ADVICE`, else a generic hint)."""
    return DIVERGENCE_ADVICE.get(solver_name, GENERIC_ADVICE)


def check_state(x: Tensor, who: str, step: int, steps: int, *, every: int = CHECK_EVERY, detail: str = "") -> None:
    """Stop a sampler whose state became NaN/Inf or exploded (``|x| > 1e6``), every ``every`` steps and at the end.

    Call it once per step of a loop with the number of steps done: it checks when ``step`` is a multiple of
    ``every`` or equal to ``steps`` (one reduction and one device sync per check) and returns at once otherwise.

    Args:
        x: the sampler's state (any shape).
        who: the solver's registry name (it picks the advice of :data:`DIVERGENCE_ADVICE`).
        step: steps done so far (1-based).
        steps: total steps of the loop.
        every: check period.
        detail: the values that matter for the advice, e.g. ``"step_size=0.3"``.

    Raises:
        DivergenceError: naming the solver, the step and the option to change.
    """
    if step % every and step != steps:
        return
    peak = float(x.detach().abs().amax())  # NaN propagates through amax; Inf stays Inf
    if peak <= DIVERGENCE_LIMIT:
        return
    n_bad = int((~torch.isfinite(x)).sum())
    what = f"{n_bad} NaN/Inf values" if n_bad else f"values up to |x| = {peak:.3g}"
    used = f" (this run: {detail})" if detail else ""
    raise DivergenceError(
        f"solver {who!r} diverged by step {step} of {steps}: its state holds {what} (images live in [0, 1]; the "
        f"limit is |x| <= {DIVERGENCE_LIMIT:g}); {divergence_advice(who)}{used}",
        solver=who,
        step=step,
    )
