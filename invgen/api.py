"""The public entry points: build components by name and solve an inverse problem."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from invgen import registry
from invgen.checks import check_device, check_options, check_tensor
from invgen.defaults import default_solver
from invgen.errors import DeviceError, DivergenceError, NonFiniteError, OptionError, ShapeError
from invgen.estimate import check_memory, estimate_cost, expected_calls, is_large, progress_bar
from invgen.operators.base import Operator
from invgen.priors.base import capabilities_of
from invgen.solvers.base import Solver, divergence_advice

_log = logging.getLogger("invgen")


def operator(name: str, **kwargs: Any) -> Operator:
    """Build a registered operator: ``operator("superres", scale=4, noise=noise("gaussian", std=0.05))``.

    ``noise`` may also be the dict a noise model's ``config()`` gives, so ``operator(**op.config())`` rebuilds
    ``op``.
    """
    noise_cfg = kwargs.get("noise")
    if isinstance(noise_cfg, dict):
        from invgen.operators.noise import NOISE_MODELS
        from invgen.operators.noise import noise as make_noise

        cfg = dict(noise_cfg)
        if "name" not in cfg:
            raise OptionError(
                f"noise: a noise dict needs its 'name' (one of {', '.join(NOISE_MODELS)}), e.g. "
                f"{{'name': 'gaussian', 'std': 0.05}}; got {noise_cfg!r}",
                option="noise",
                owner=f"operator {name!r}",
            )
        kwargs["noise"] = make_noise(cfg.pop("name"), **cfg)
    return registry.get("operators", name).create(**kwargs)


def prior(name: str, **kwargs: Any) -> Any:
    """Build a registered prior (loading its weights, if any): ``prior("gmm", ...)``.

    Options are checked against the factory's signature first (unknown names, and values of the wrong type for
    options annotated ``float``, ``int``, ``bool`` or ``str``: an :class:`~invgen.errors.OptionError`), and a
    ``device`` against the devices this machine has (:func:`invgen.checks.check_device`), before any weights load.
    """
    entry = registry.get("priors", name)
    check_options(entry.factory, kwargs, f"prior {name!r}")
    if "device" in kwargs and kwargs["device"] is not None:
        check_device(kwargs["device"], f"prior {name!r}: device")
    return entry.create(**kwargs)


def solver(name: str, **options: Any) -> Solver:
    """Build a registered solver with options: ``solver("mala", steps=2000)``.

    An unknown option, or a value of the wrong type for an option annotated ``float``, ``int``, ``bool`` or ``str``
    (``eta="abc"``), raises an :class:`~invgen.errors.OptionError` (a ``TypeError``) naming the option, the type it
    expects and what came.
    """
    entry = registry.get("solvers", name)
    try:  # a Solver only holds its configuration: building one without options is free and gives its function
        fn = getattr(entry.create(), "fn", None)
    except Exception:  # a plugin's solver that needs options: its own checks apply
        fn = None
    if fn is not None:
        check_options(fn, options, f"solver {name!r}", skip=("prior", "operator", "y", "n_samples", "generator"))
    return entry.create(**options)


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

    Samples far off the data are flagged, not averaged: :func:`solve` computes the residual ``||A(x_n) - y||`` of
    each of the N samples of an item and flags a sample whose residual is more than ``FLAG_RATIO`` (10) times the
    median of its siblings' and above the noise floor (``5 sigma sqrt(m)``, m the size of one observation, sigma the
    Gaussian noise std or Poisson's effective one, at least 0.01), or that is not finite. ``mean`` and ``std``
    leave flagged samples out; ``samples`` keeps them all, so nothing is hidden.

    Attributes:
        samples: ``(N, B, C, H, W)``, N samples for each of the B observations (flagged ones included).
        nfe: number of prior evaluations (network calls, each batched over samples and items).
        seconds: wall-clock time of the solver.
        solver: the solver's config (name and options).
        extras: solver-specific figures (e.g. ``acceptance_rate``); from :func:`solve` also ``default_solver`` (the
            solver it chose and why, when none was named) and, for a large problem, ``estimate`` and
            ``estimated_seconds`` (its estimated time and memory).
        flagged: ``(N, B)`` booleans, True for a sample left out of ``mean`` and ``std``; None (the default for a
            Posterior built by hand) or all False: every sample counts.
        warnings: one human-readable line per flagged sample (item, sample, residual against its siblings').
    """

    samples: Tensor
    nfe: int
    seconds: float
    solver: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    flagged: Tensor | None = None
    warnings: list[str] = field(default_factory=list)

    def _kept(self) -> Tensor | None:
        """``(N, B, 1, 1, 1)`` booleans of the samples that count, or None when all do."""
        if self.flagged is None or not bool(self.flagged.any()):
            return None
        keep = ~self.flagged.to(device=self.samples.device, dtype=torch.bool)
        return keep.reshape(*keep.shape, *([1] * (self.samples.dim() - 2)))

    @property
    def mean(self) -> Tensor:
        """Posterior mean estimate over the samples that are not flagged, ``(B, C, H, W)`` (NaN for an item whose
        samples are all flagged)."""
        keep = self._kept()
        if keep is None:
            return self.samples.mean(dim=0)
        count = keep.sum(dim=0).to(self.samples.dtype)
        total = torch.where(keep, self.samples, torch.zeros_like(self.samples)).sum(dim=0)
        return total / count  # 0 / 0 = NaN where no sample is kept: never a silent average

    @property
    def std(self) -> Tensor:
        """Per-pixel posterior standard deviation (unbiased) over the samples that are not flagged, ``(B, C, H, W)``;
        zeros for an item with a single kept sample (and NaN for one with none)."""
        keep = self._kept()
        if keep is None:
            if self.samples.shape[0] < 2:
                return torch.zeros_like(self.samples[0])
            return self.samples.std(dim=0, correction=1)
        count = keep.sum(dim=0).to(self.samples.dtype)
        mean = self.mean
        dev = torch.where(keep, self.samples - mean, torch.zeros_like(self.samples))
        var = dev.pow(2).sum(dim=0) / (count - 1).clamp_min(1)
        return torch.where(count > 0, var.sqrt(), torch.full_like(var, float("nan")))

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    def clamped(self, low: float = 0.0, high: float = 1.0) -> Posterior:
        """A copy whose samples are clamped to ``[low, high]``, with the same flags: what to score with the
        metrics, which refuse images outside [0, 1] (``post.clamped().mean`` is the mean of the clamped kept samples).
        """
        return replace(self, samples=self.samples.clamp(low, high))


# A sample is flagged when its residual ||A(x) - y|| exceeds FLAG_RATIO times the median of its siblings' and the
# noise floor FLAG_NOISE_MULTIPLE * sigma * sqrt(m) (sigma at least FLAG_MIN_SIGMA, so noiseless problems too).
FLAG_RATIO = 10.0
FLAG_NOISE_MULTIPLE = 5.0
FLAG_MIN_SIGMA = 0.01 / FLAG_NOISE_MULTIPLE


def _noise_sigma(operator: Operator, y: Tensor) -> Tensor:
    """Per item, the standard deviation of one entry of the observation noise, ``(B,)``: the Gaussian std, or for
    Poisson noise ``sqrt(mean(|y|) / rate)``; 0 for a noise model it does not know."""
    noise = operator.noise
    b = y.shape[0]
    if getattr(noise, "name", None) == "gaussian":
        return torch.full((b,), float(noise.std), dtype=torch.float64)
    rate = getattr(noise, "rate", None)
    if rate is not None:
        return (y.detach().abs().reshape(b, -1).mean(1).double().cpu() / float(rate)).sqrt()
    return torch.zeros(b, dtype=torch.float64)


def flag_samples(samples: Tensor, operator: Operator, y: Tensor) -> tuple[Tensor, list[str]]:
    """Flag the samples far off the data (see :class:`Posterior`): ``(flagged (N, B) bool, warnings)``.

    The residual of sample n of item b is ``r[n, b] = ||A(x_n) - y_b||``; it is flagged when it is not finite, or when
    ``r[n, b] > FLAG_RATIO * median_{k != n} r[k, b]`` and ``r[n, b] > FLAG_NOISE_MULTIPLE * max(sigma,
    FLAG_MIN_SIGMA) * sqrt(m)``. A single sample (N = 1) has no siblings: only a non-finite one is flagged.

    Args:
        samples: ``(N, B, C, H, W)`` posterior samples.
        operator: the forward operator (with its noise model).
        y: the observations, ``(B, ...)``.

    Returns:
        The flags on ``samples``' device, and one line per flagged sample.
    """
    n, b = samples.shape[:2]
    with torch.no_grad():
        ax = operator(samples.reshape(n * b, *samples.shape[2:]))
        diff = ax.reshape(n, b, -1) - y.to(ax.dtype).reshape(1, b, -1)
        r = diff.double().norm(dim=2).cpu()  # (N, B)
    m = diff.shape[2]
    floor = FLAG_NOISE_MULTIPLE * _noise_sigma(operator, y).clamp_min(FLAG_MIN_SIGMA) * m**0.5  # (B,)
    finite = torch.isfinite(r)
    flagged = ~finite
    reference = torch.full_like(r, float("nan"))
    if n > 1:
        big = torch.where(finite, r, torch.full_like(r, float("inf")))  # a non-finite sibling counts as far off
        for k in range(n):
            reference[k] = torch.cat([big[:k], big[k + 1 :]]).median(dim=0).values
        flagged |= finite & (r > FLAG_RATIO * reference) & (r > floor)
    warnings = []
    for k, j in flagged.nonzero().tolist():
        if not finite[k, j]:
            why = "is not finite"
        else:
            why = (
                f"has residual ||A(x) - y|| = {float(r[k, j]):.4g}, {float(r[k, j] / reference[k, j]):.3g} times the "
                f"median of its {n - 1} siblings ({float(reference[k, j]):.4g}; noise floor {float(floor[j]):.4g})"
            )
        warnings.append(f"item {j}, sample {k} {why}: flagged and left out of the posterior mean and std")
    return flagged.to(samples.device), warnings


class _CountingPrior:
    """Delegates to a prior and counts capability calls (the NFE)."""

    _COUNTED = ("denoise", "score", "log_prob", "decode", "encode")

    def __init__(self, inner: Any, tick: Any = None) -> None:
        self._inner = inner
        self.nfe = 0
        self._tick = tick  # called after each counted call (a progress bar's update), or None

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr in self._COUNTED and callable(value):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.nfe += 1
                out = value(*args, **kwargs)
                if self._tick is not None:
                    self._tick(1)
                return out

            return counted
        return value


def solve(
    y: Tensor,
    operator: Operator,
    prior: Any = None,
    solver: str | Solver | None = None,
    n_samples: int = 1,
    seed: int | None = None,
    progress: bool | None = None,
    max_memory: int | str | None = None,
    **solver_options: Any,
) -> Posterior:
    """Sample the posterior p(x | y) of an inverse problem.

    Args:
        y: the observation, shaped as ``operator`` produces it (``(B, C', H', W')``, or ``(B, m)`` for sensing).
        operator: the forward operator with its noise model (``invgen.operator(...)``).
        prior: a prior object or a registered prior name; baselines (``pinv``, ``tikhonov``, ``tv``) need none.
        solver: a registered solver name or a :class:`Solver`; by default (None) one chosen by what the prior and the
            operator offer (:func:`invgen.defaults.default_solver`): mala for a prior with a score and a log-density;
            for a denoiser, ddnm at 50 steps on a linear operator with an SVD, diffpir at 50 steps on other operators
            with Gaussian noise, dps at 250 steps otherwise; latent_map for a generator; ula for a score; tikhonov
            without a prior. ``**solver_options`` apply over the default's (``steps=20`` works). The choice is in
            ``post.extras["default_solver"]`` and logged at INFO level on the ``invgen`` logger (silent unless
            logging is configured).
        n_samples: N posterior samples per observation, batched into one call of the prior per step.
        seed: seed of the solver's random generator (None: drawn from torch's global generator).
        progress: show a progress bar over the network calls (tqdm, on stderr); None (default): only for a large
            problem, one whose network call carries more than ``invgen.estimate.LARGE_PIXELS`` (1e6) pixels. A large
            problem also logs a warning with its estimated time and memory (:func:`invgen.estimate.estimate_cost`:
            one timed network call on a crop, scaled by pixels, samples and steps), kept in
            ``post.extras["estimate"]``.
        max_memory: refuse, before any allocation, a solve whose state alone (``invgen.estimate.STATE_COPIES``
            copies of the ``N x B`` images) is estimated above this many bytes (a number or ``"64G"``; ``"off"``:
            no limit); None (default): ``INVGEN_MAX_MEMORY``, else the total memory of y's device (this machine's RAM
            or the GPU's). ``n_samples=10**9`` is refused at once with the estimate and the limit.
        **solver_options: options of the solver (with a solver name, or over the default's).

    Dtype and device:
        y is computed in the prior's dtype: a prior with float32 (float64) parameters, or a ``dtype`` attribute,
        gets y cast to float32 (float64), so a float64 or float16 observation with a float32 network is computed in
        float32. A prior without parameters (the analytic ones compute in their input's dtype) and the baselines keep
        float32 and float64 observations as they come; float16 and bfloat16 observations are computed in float32
        (the solvers' arithmetic is not made for half precision). The samples have that working dtype. The solve
        runs on y's device; a prior whose parameters live on another device is refused (``DeviceError``) before
        any work.

    Returns:
        A :class:`Posterior` with ``samples`` of shape ``(N, B, C, H, W)``; samples far off the data are flagged
        (``post.flagged``, ``post.warnings``) and left out of ``post.mean`` and ``post.std``.

    Raises:
        DivergenceError: if the solver's state became NaN/Inf or exploded, or a returned sample is not finite; the
            message names the solver and the option to change (step size, guidance scale or steps).
        MemoryLimitError: if the estimated memory exceeds ``max_memory``.
        DeviceError: if the prior's parameters are on another device than y.
    """
    if not isinstance(operator, Operator):
        raise TypeError(f"operator: expected an invgen operator (invgen.operator(...)), got {type(operator).__name__}")
    check_tensor(y, "y")
    operator.check_observation(y, "y")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected an integer >= 1, got {n_samples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an integer or None, got {seed!r} ({type(seed).__name__})")
    if isinstance(prior, str):
        prior = globals()["prior"](prior)
    if prior is not None:
        _check_prior_device(prior, y)
    y = y.to(working_dtype(prior, y.dtype))
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
    notes: dict[str, Any] = {}
    if solver is None:
        choice = default_solver(caps, operator)
        solver, solver_options = choice.name, {**choice.options, **solver_options}
        notes["default_solver"] = choice.describe(solver_options)
    if isinstance(solver, str):
        solver = globals()["solver"](solver, **solver_options)
    elif solver_options:
        raise TypeError("solver options can only be given together with a solver name; configure the Solver instead")
    if "default_solver" in notes:  # said once its options are known to fit
        _log.info("solver: %s", notes["default_solver"])
    if not isinstance(solver, Solver):
        raise TypeError(f"solver: expected a name or an invgen Solver, got {type(solver).__name__}")
    x_shape = tuple(operator.input_shape(tuple(y.shape)))
    check_memory(x_shape, n_samples, y.dtype, y.device, max_memory)
    generator = torch.Generator(device=y.device)
    generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    large = len(x_shape) == 4 and is_large(x_shape, n_samples)
    if large and prior is not None:
        estimate = estimate_cost(prior, solver, x_shape, n_samples, y.device)
        if estimate is not None:
            notes["estimate"] = estimate.describe()
            notes["estimated_seconds"] = estimate.seconds
            _log.warning("%s", notes["estimate"])
    bar = progress_bar(expected_calls(solver), solver.name) if (progress or (progress is None and large)) else None
    counted = _CountingPrior(prior, bar.update if bar is not None else None) if prior is not None else None
    if counted is not None:
        counted.capabilities = caps  # type: ignore[attr-defined]
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    t0 = time.perf_counter()
    # No autograd graph outside the blocks that ask for one (torch.enable_grad in DPS, PiGDM, the likelihood
    # gradient...): without this, a network prior's activations of every step stay alive until the end.
    try:
        with torch.no_grad():
            samples, extras = solver(
                counted if counted is not None else _NoPrior(), operator, y, n_samples=n_samples, generator=generator
            )
    except NonFiniteError as err:  # y was checked above: NaN/Inf met inside the solver's loop is a divergence
        raise DivergenceError(
            f"solver {solver.name!r} stopped on non-finite values ({err}); its state diverged: "
            f"{divergence_advice(solver.name)}",
            solver=solver.name,
        ) from err
    finally:
        if bar is not None:
            bar.close()
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    seconds = time.perf_counter() - t0
    if samples.dim() != 5 or samples.shape[0] != n_samples or samples.shape[1] != y.shape[0]:
        raise ShapeError(
            f"solver {solver.name!r} returned shape {tuple(samples.shape)}, expected "
            f"({n_samples}, {y.shape[0]}, C, H, W)"
        )
    samples = samples.detach()
    bad = ~torch.isfinite(samples)
    if bool(bad.any()):
        per_sample = bad.reshape(n_samples, y.shape[0], -1).any(dim=2)
        raise DivergenceError(
            f"solver {solver.name!r} returned non-finite samples: {int(per_sample.sum())} of the "
            f"{n_samples} x {y.shape[0]} (samples x items) hold NaN/Inf ({int(bad.sum())} values); "
            f"{divergence_advice(solver.name)}",
            solver=solver.name,
        )
    flagged, warnings = flag_samples(samples, operator, y)
    nfe = counted.nfe if counted is not None else 0
    return Posterior(samples, nfe, seconds, solver.config(), {**extras, **notes}, flagged=flagged, warnings=warnings)


def _prior_parameters(prior: Any) -> Any:
    """The floating parameters of a torch-module prior (empty for others and for parameter-free modules)."""
    if not isinstance(prior, torch.nn.Module):
        return iter(())
    return (p for p in prior.parameters() if p.is_floating_point())


def working_dtype(prior: Any, y_dtype: torch.dtype) -> torch.dtype:
    """The dtype :func:`solve` computes in (see its docstring): the prior's ``dtype`` attribute or its parameters'
    dtype when float32 or float64; else y's dtype, with float16 and bfloat16 raised to float32."""
    declared = getattr(prior, "dtype", None) if prior is not None else None
    if not isinstance(declared, torch.dtype):
        declared = next((p.dtype for p in _prior_parameters(prior)), None)
    if declared in (torch.float32, torch.float64):
        return declared
    return y_dtype if y_dtype in (torch.float32, torch.float64) else torch.float32


def _check_prior_device(prior: Any, y: Tensor) -> None:
    """Refuse a prior whose parameters are on another device than y, before any work."""
    param = next(_prior_parameters(prior), None)
    if param is None or param.device == y.device:
        return
    raise DeviceError(
        f"y is on {y.device}, but the parameters of prior {getattr(prior, 'name', type(prior).__name__)!r} are on "
        f"{param.device}: move y with y.to({str(param.device)!r}) (or the prior with prior.to({str(y.device)!r}))"
    )


class _NoPrior:
    """Stands in for the prior of baseline solvers that use none."""

    capabilities = frozenset()
    name = "none"
    image_shape = None
