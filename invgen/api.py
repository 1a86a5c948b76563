"""The public entry points: build components by name and solve an inverse problem."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from invgen import registry
from invgen.checks import check_tensor
from invgen.errors import ShapeError
from invgen.operators.base import Operator
from invgen.priors.base import capabilities_of
from invgen.solvers.base import Solver


def operator(name: str, **kwargs: Any) -> Operator:
    """Build a registered operator: ``operator("superres", scale=4, noise=noise("gaussian", std=0.05))``.

    ``noise`` may also be the dict a noise model's ``config()`` gives, so ``operator(**op.config())`` rebuilds
    ``op``.
    """
    noise_cfg = kwargs.get("noise")
    if isinstance(noise_cfg, dict):
        from invgen.operators.noise import noise as make_noise

        cfg = dict(noise_cfg)
        kwargs["noise"] = make_noise(cfg.pop("name"), **cfg)
    return registry.get("operators", name).create(**kwargs)


def prior(name: str, **kwargs: Any) -> Any:
    """Build a registered prior (loading its weights, if any): ``prior("gmm", ...)``."""
    return registry.get("priors", name).create(**kwargs)


def solver(name: str, **options: Any) -> Solver:
    """Build a registered solver with options: ``solver("mala", steps=2000)``."""
    return registry.get("solvers", name).create(**options)


def dataset(name: str, **kwargs: Any) -> Any:
    """Build a registered dataset: ``dataset("bsd68")``, ``dataset("mnist", split="test")``, ``dataset("folder",
    path="imgs/")``; returns an :class:`invgen.data.base.Dataset` of ``(C, H, W)`` images in [0, 1].

    Registered sets read from ``root=`` (default ``INVGEN_DATA``) and check their files' SHA-256 (``verify=True``).
    """
    return registry.get("datasets", name).create(**kwargs)


def list_datasets() -> list[str]:
    """Names of every registered dataset."""
    return registry.names("datasets")


def list_operators() -> list[str]:
    """Names of every registered operator."""
    return registry.names("operators")


def list_priors() -> list[str]:
    """Names of every registered prior."""
    return registry.names("priors")


def list_solvers() -> list[str]:
    """Names of every registered solver."""
    return registry.names("solvers")


def compatible_solvers(prior_or_name: Any) -> list[str]:
    """Solvers whose needs a prior (object or registered name) meets."""
    if isinstance(prior_or_name, str):
        caps = frozenset(registry.get("priors", prior_or_name).meta.get("capabilities", ()))
    else:
        caps = capabilities_of(prior_or_name)
    return sorted(n for n, e in registry.entries("solvers").items() if set(e.meta.get("needs", ())) <= caps)


@dataclass
class Posterior:
    """Posterior samples of one solve.

    Attributes:
        samples: ``(N, B, C, H, W)``, N samples for each of the B observations.
        nfe: number of prior evaluations (network calls, each batched over samples and items).
        seconds: wall-clock time of the solver.
        solver: the solver's config (name and options).
        extras: solver-specific figures (e.g. ``acceptance_rate``).
    """

    samples: Tensor
    nfe: int
    seconds: float
    solver: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> Tensor:
        """Posterior mean estimate, ``(B, C, H, W)``."""
        return self.samples.mean(dim=0)

    @property
    def std(self) -> Tensor:
        """Per-pixel posterior standard deviation (unbiased; zeros for a single sample), ``(B, C, H, W)``."""
        if self.samples.shape[0] < 2:
            return torch.zeros_like(self.samples[0])
        return self.samples.std(dim=0, correction=1)

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])


class _CountingPrior:
    """Delegates to a prior and counts capability calls (the NFE)."""

    _COUNTED = ("denoise", "score", "log_prob", "decode", "encode")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.nfe = 0

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr in self._COUNTED and callable(value):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.nfe += 1
                return value(*args, **kwargs)

            return counted
        return value


def _default_solver(caps: frozenset[str]) -> str:
    preference = ("mala", "dps", "latent_map", "ula", "tikhonov")
    solvers = registry.entries("solvers")
    for name in preference:
        if name in solvers and set(solvers[name].meta.get("needs", ())) <= caps:
            return name
    return "tikhonov"


def solve(
    y: Tensor,
    operator: Operator,
    prior: Any = None,
    solver: str | Solver | None = None,
    n_samples: int = 1,
    seed: int | None = None,
    **solver_options: Any,
) -> Posterior:
    """Sample the posterior p(x | y) of an inverse problem.

    Args:
        y: the observation, shaped as ``operator`` produces it (``(B, C', H', W')``, or ``(B, m)`` for sensing).
        operator: the forward operator with its noise model (``invgen.operator(...)``).
        prior: a prior object or a registered prior name; baselines (``pinv``, ``tikhonov``, ``tv``) need none.
        solver: a registered solver name or a :class:`Solver`; by default the first of mala (exact where the prior has a
            log-density), dps, latent_map, ula that the prior supports, else tikhonov.
        n_samples: N posterior samples per observation, batched into one call of the prior per step.
        seed: seed of the solver's random generator (None: drawn from torch's global generator).
        **solver_options: options of the solver (only with a solver name).

    Returns:
        A :class:`Posterior` with ``samples`` of shape ``(N, B, C, H, W)``.
    """
    if not isinstance(operator, Operator):
        raise TypeError(f"operator: expected an invgen operator (invgen.operator(...)), got {type(operator).__name__}")
    check_tensor(y, "y")
    operator.check_observation(y, "y")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected an integer >= 1, got {n_samples!r}")
    if isinstance(prior, str):
        prior = globals()["prior"](prior)
    if prior is not None:
        caps = capabilities_of(prior)
        shape = getattr(prior, "image_shape", None)
        x_shape = operator.input_shape(tuple(y.shape))
        if shape is not None and tuple(x_shape[1:]) != tuple(shape):
            raise ShapeError(
                f"prior {getattr(prior, 'name', '?')!r} is defined on images of shape {tuple(shape)}, but the "
                f"operator's input for y of shape {tuple(y.shape)} has shape {tuple(x_shape[1:])}"
            )
    else:
        caps = frozenset()
    if solver is None:
        solver = _default_solver(caps)
    if isinstance(solver, str):
        solver = globals()["solver"](solver, **solver_options)
    elif solver_options:
        raise TypeError("solver options can only be given together with a solver name; configure the Solver instead")
    if not isinstance(solver, Solver):
        raise TypeError(f"solver: expected a name or an invgen Solver, got {type(solver).__name__}")
    generator = torch.Generator(device=y.device)
    generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    counted = _CountingPrior(prior) if prior is not None else None
    if counted is not None:
        counted.capabilities = caps  # type: ignore[attr-defined]
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    t0 = time.perf_counter()
    # No autograd graph outside the blocks that ask for one (torch.enable_grad in DPS, PiGDM, the likelihood
    # gradient...): without this, a network prior's activations of every step stay alive until the end.
    with torch.no_grad():
        samples, extras = solver(
            counted if counted is not None else _NoPrior(), operator, y, n_samples=n_samples, generator=generator
        )
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    seconds = time.perf_counter() - t0
    if samples.dim() != 5 or samples.shape[0] != n_samples or samples.shape[1] != y.shape[0]:
        raise ShapeError(
            f"solver {solver.name!r} returned shape {tuple(samples.shape)}, expected "
            f"({n_samples}, {y.shape[0]}, C, H, W)"
        )
    return Posterior(samples.detach(), counted.nfe if counted is not None else 0, seconds, solver.config(), extras)


class _NoPrior:
    """Stands in for the prior of baseline solvers that use none."""

    capabilities = frozenset()
    name = "none"
    image_shape = None
