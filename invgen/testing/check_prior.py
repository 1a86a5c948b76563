"""Conformance checks for prior plugins: does a prior do what its capabilities promise?

:func:`check_prior` runs, on tiny batches (``B = 3``), the checks that apply to what the prior declares and
implements, and returns a :class:`~invgen.testing.report.PriorReport`; every failure says what was expected, what
came and what to fix. :func:`check_registered` builds a registered prior (with its ``examples`` options) and checks
it against what ``register()`` said. ``invgen check-prior NAME`` runs the latter from the command line.

========================= ==========================================================================================
check                     what passes
========================= ==========================================================================================
declaration.capabilities  ``capabilities`` is a set of known names (``denoiser``, ``score``, ``log_density``,
                          ``generator``)
declaration.implemented   every declared capability's methods are implemented, and every implemented one declared
declaration.registered    the registration metadata's ``capabilities`` equal the object's
declaration.image_shape   ``image_shape`` is None or ``(C, H, W)``, and equals the registered one
declaration.log_prob_kind the registered ``log_prob_kind`` equals the object's
generator.latent_shape    ``latent_shape`` is a tuple of positive integers
generator.decode          ``decode(z)``, ``z ~ N(0, I)`` of shape ``(B, *latent_shape)``, gives finite
                          ``(B, *image_shape)`` images
generator.range           ... on the [0, 1] scale: at least 95 % of values in [-0.1, 1.1] (an exact flow inverse or a
                          Gaussian may spill a little; a [-1, 1] or [0, 255] decoder does not pass)
generator.grad            ``decode`` is differentiable in ``z`` (the latent solvers need it)
generator.sample          ``sample(n, generator=)``, where the prior has one: ``(n, *image_shape)`` on [0, 1]
generator.encode          ``encode(x)``, where implemented: finite ``(B, *latent_shape)``
sigma.range               ``0 <= sigma_min <= sigma_max`` (``sigma_max`` may be inf; > 0 for a denoiser)
denoiser.output           ``denoise(x, sigma)`` keeps the shape and is finite, for float and ``(B,)`` sigmas alike
denoiser.reduces_error    on clean images (see below) plus noise at sigma 0.1 and 0.3 (clipped to the prior's
                          range), the output is closer to the clean images than the noisy input is
score.output              ``score(x, sigma)`` keeps the shape and is finite, for float and ``(B,)`` sigmas alike
score.tweedie             with a denoiser too: ``denoise(x, s) = x + s^2 score(x, s)`` (Tweedie) within 5 %
log_density.kind          ``log_prob_kind`` is ``exact``, ``bound`` or ``unnormalized``
log_density.shape         ``log_prob(x)`` has shape ``(B,)``: one value per image
log_density.finite        ... and finite values
log_density.score         with a score too: the finite-difference derivative of ``log_prob`` along the score
                          equals ``|score(x, s0)|`` within 2 % (``s0 = sigma_min``), in float64 where possible
========================= ==========================================================================================

Clean images: ``decode(z)`` of the generator, else a 12-step deterministic DDIM run of the prior's own denoiser, else
its ``sample`` method, else a smooth synthetic image; clamped to [0, 1].

Example:
    >>> import invgen
    >>> from invgen.testing import check_prior
    >>> report = check_prior(invgen.prior("gmm", image_shape=(1, 8, 8)))
    >>> report.ok
    True

Note: ``from invgen.testing import check_prior`` gives the function; the module is
``sys.modules["invgen.testing.check_prior"]`` (``import invgen.testing.check_prior as m`` also gives the function,
which ``invgen.testing`` re-exports under the module's name).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from invgen.capabilities import CAPABILITIES, unknown_names
from invgen.errors import ConformanceError
from invgen.testing.capability_checks import (
    denoiser_checks,
    generator_checks,
    log_density_checks,
    score_checks,
    sigma_check,
)
from invgen.testing.prior_run import ANY_SIZE, SIGNATURES, Fail, Run, Skip, implements
from invgen.testing.report import FAILED, CheckResult, PriorReport


# -- declaration --------------------------------------------------------------------------------------------------
def _normalize_declared(declared: Any) -> dict[str, Any] | None:
    if declared is None:
        return None
    if isinstance(declared, Mapping):
        return dict(declared)
    if isinstance(declared, str) or not isinstance(declared, Iterable):
        raise TypeError(
            "declared: expected the registration metadata (a dict such as registry.get('priors', name).meta) or a "
            f"sequence of capability names, got {declared!r}"
        )
    return {"capabilities": tuple(declared)}


def _declaration_checks(run: Run, declared: dict[str, Any] | None) -> set[str]:
    """The declaration checks; returns the capabilities whose contracts are checked next (the implemented ones)."""
    prior = run.prior
    implemented = {c for c in CAPABILITIES if implements(prior, c)}
    own: set[str] | None = None

    def capabilities() -> str:
        nonlocal own
        caps = getattr(prior, "capabilities", None)
        if caps is None:
            raise Fail(
                f"expected a 'capabilities' attribute (a frozenset of {', '.join(CAPABILITIES)}), got none; fix: "
                "subclass invgen.Prior and set capabilities = frozenset({...}) on the class"
            )
        if isinstance(caps, str) or not all(isinstance(c, str) for c in caps):
            raise Fail(f"expected a set of capability names, got {caps!r}; fix: capabilities = frozenset({{...}})")
        problem = unknown_names(caps)
        if problem:
            raise Fail(f"the prior declares {problem}; fix: correct the name in the class's capabilities")
        own = set(caps)
        return f"declares {', '.join(sorted(own)) or 'nothing'}"

    def implemented_check() -> str:
        if own is None:
            raise Skip("the declared capabilities are unreadable (see declaration.capabilities)")
        missing, undeclared = sorted(own - implemented), sorted(implemented - own)
        problems = [
            f"declares {c!r} but does not implement {SIGNATURES[c]} (fix: implement it, or remove {c!r} from "
            "capabilities)"
            for c in missing
        ] + [
            f"implements {SIGNATURES[c]} but does not declare {c!r} (fix: add {c!r} to capabilities, or solvers "
            "that need it will refuse the prior)"
            for c in undeclared
        ]
        if problems:
            raise Fail("; ".join(problems))
        return f"implements exactly what it declares ({', '.join(sorted(own)) or 'nothing'})"

    def registered() -> str:
        if declared is None:
            raise Skip("no registration metadata given (declared=None)")
        if "capabilities" not in declared:
            raise Skip("the registration metadata has no 'capabilities'")
        meta = declared["capabilities"]
        if isinstance(meta, str):
            raise Fail(f"register() got capabilities={meta!r}, a string; fix: give a tuple, ({meta!r},)")
        problem = unknown_names(meta)
        if problem:
            raise Fail(f"register() declares {problem}; fix: correct the name in register(..., capabilities=...)")
        if own is not None and set(meta) != own:
            raise Fail(
                f"register() says capabilities {sorted(meta)} but the built prior declares {sorted(own)}; fix: make "
                "the two agree (invgen plugins and the solvers' matching read the registered ones without building)"
            )
        return f"register() and the object agree: {', '.join(sorted(meta)) or 'nothing'}"

    def image_shape() -> str:
        shape = getattr(prior, "image_shape", None)
        if shape is not None and not (
            isinstance(shape, tuple | list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)
        ):
            raise Fail(f"expected image_shape None (any size) or (C, H, W) of positive ints, got {shape!r}")
        shape = tuple(shape) if shape is not None else None
        if declared is not None and "image_shape" in declared:
            meta = declared["image_shape"]
            meta = tuple(meta) if meta is not None else None
            if meta != shape:
                raise Fail(
                    f"register() says image_shape={meta} but the built prior has image_shape={shape}; fix: register "
                    "the shape the factory builds (None if the prior takes any size)"
                )
            return f"image_shape {shape} agrees with register()"
        return f"image_shape {shape}" + (" (any size)" if shape is None else "")

    def log_prob_kind() -> str:
        if declared is None:
            raise Skip("no registration metadata given (declared=None)")
        if declared.get("log_prob_kind") is None:
            raise Skip("register() gives no log_prob_kind")
        kind = getattr(prior, "log_prob_kind", None)
        if declared["log_prob_kind"] != kind:
            raise Fail(
                f"register() says log_prob_kind={declared['log_prob_kind']!r} but the built prior has {kind!r}; fix: "
                "make the two agree"
            )
        return f"log_prob_kind {kind!r} agrees with register()"

    run.check("declaration.capabilities", capabilities)
    run.check("declaration.implemented", implemented_check)
    run.check("declaration.registered", registered)
    run.check("declaration.image_shape", image_shape)
    run.check("declaration.log_prob_kind", log_prob_kind)
    return implemented


def _test_shape(run: Run, declared: dict[str, Any] | None, image_shape: Any) -> None:
    """The ``(C, H, W)`` of the test images: given, the prior's, or (any-size priors) a channel count that works."""
    for shape in (image_shape, getattr(run.prior, "image_shape", None)):
        if shape is not None:
            run.shape = tuple(int(s) for s in shape)
            return
    channels = (declared or {}).get("channels") or getattr(run.prior, "channels", None)
    candidates = [channels] if isinstance(channels, int) else [1, 3]
    for c in candidates:
        x = 0.5 + 0.1 * run.randn(2, c, ANY_SIZE, ANY_SIZE)
        for capability, probe in (
            ("denoiser", lambda x: run.prior.denoise(x, run.clip_sigma(0.1))),
            ("score", lambda x: run.prior.score(x, run.clip_sigma(0.1))),
            ("log_density", lambda x: run.prior.log_prob(x.clamp(0, 1))),
        ):
            if implements(run.prior, capability):
                try:
                    probe(x)
                except Exception:
                    break
                run.shape = (c, ANY_SIZE, ANY_SIZE)
                return
    run.shape = (candidates[0], ANY_SIZE, ANY_SIZE)


# -- entry points -------------------------------------------------------------------------------------------------
def check_prior(
    prior: Any,
    *,
    declared: Mapping[str, Any] | Iterable[str] | None = None,
    generator: torch.Generator | None = None,
    strict: bool = False,
    image_shape: tuple[int, int, int] | None = None,
    name: str | None = None,
) -> PriorReport:
    """Check that a prior object meets the contracts of the capabilities it declares and implements.

    Args:
        prior: the prior object (usually an :class:`invgen.Prior` subclass).
        declared: what ``register()`` said: the registration metadata (``registry.get("priors", n).meta``, whose
            ``capabilities``, ``image_shape`` and ``log_prob_kind`` are compared with the object's) or a sequence
            of capability names. None: only the object's own declaration is checked.
        generator: a CPU ``torch.Generator`` for the random draws (default: seeded with 0, so reports repeat).
        strict: raise :class:`~invgen.errors.ConformanceError` at the first failed check instead of reporting it.
        image_shape: ``(C, H, W)`` of the test images for a prior that takes any size (default: its own
            ``image_shape``, else ``(C, 32, 32)`` with a channel count the prior accepts).
        name: the prior's name in the report (default: its ``name`` attribute).

    Returns:
        The :class:`~invgen.testing.report.PriorReport`: ``.ok``, ``.failed``, ``report["generator.range"]``,
        ``print(report)``.

    Raises:
        ConformanceError: with ``strict=True``, at the first failure (its ``check`` and ``report`` attributes).
        TypeError: ``declared`` is neither metadata nor a sequence of names.

    Example:
        >>> report = check_prior(MyPrior(), declared={"capabilities": ("denoiser",), "image_shape": (1, 32, 32)})
        >>> print(report)  # doctest: +SKIP
        my-prior: OK (9 passed, 0 failed, 1 skipped, 0.41 s)
          PASS  declaration.capabilities: declares denoiser
          ...
    """
    meta = _normalize_declared(declared)
    label = name or str(getattr(prior, "name", type(prior).__name__))
    run = Run(prior, label, generator if generator is not None else torch.Generator().manual_seed(0), strict)
    t0 = time.perf_counter()
    try:
        implemented = _declaration_checks(run, meta)
        _test_shape(run, meta, image_shape)
        if "generator" in implemented:
            generator_checks(run)
        if implemented & {"denoiser", "score"}:
            sigma_check(run, implemented)
        if "denoiser" in implemented:
            denoiser_checks(run)
        if "score" in implemented:
            score_checks(run, implemented)
        if "log_density" in implemented:
            log_density_checks(run, implemented)
    finally:
        run.report.seconds = time.perf_counter() - t0
    return run.report


def required_options(factory: Any) -> list[str]:
    """The parameters a prior factory cannot be called without (no default, not ``*args``/``**kw``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in params if p.default is inspect.Parameter.empty and p.kind not in variadic]


def check_registered(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    strict: bool = False,
) -> list[PriorReport]:
    """Build a registered prior and :func:`check_prior` it against its registration metadata.

    Args:
        name: a registered prior (an unknown name raises :class:`~invgen.errors.UnknownNameError`).
        options: factory options, added to (and overriding) each of the registration's ``examples`` (the options
            that build small instances); without examples the prior is built with these options alone.
        generator: passed to :func:`check_prior` (default seeded).
        strict: passed to :func:`check_prior`; a prior that cannot be built raises then too.

    Returns:
        One report per set of options; a prior that cannot be built gives a report with a failed ``build`` check.
    """
    from invgen import registry

    entry = registry.get("priors", name)
    runs = [{**dict(example), **dict(options or {})} for example in entry.meta.get("examples", ())]
    runs = [dict(r) for r in {repr(r): r for r in runs}.values()] or [dict(options or {})]  # unique, in order
    reports = []
    for kwargs in runs:
        label = name + (f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" if kwargs else "")
        try:
            prior = entry.create(**kwargs)
        except Exception as exc:
            needed = [o for o in required_options(entry.factory) if o not in kwargs]
            fix = (
                f"the factory needs {', '.join(needed)}: give options={{...}} (invgen check-prior {name} "
                + " ".join(f"--option {o}=..." for o in needed)
                + ")"
                if needed
                else "fix the factory, or register examples=[{...}] with options that build a small instance"
            )
            message = f"invgen.prior({name!r}, **{kwargs!r}) raised {type(exc).__name__}: {exc}; fix: {fix}"
            report = PriorReport(label, [CheckResult("build", FAILED, message)])
            if strict:
                raise ConformanceError(f"prior {label!r} failed build: {message}", report.results[0], report) from exc
            reports.append(report)
            continue
        reports.append(check_prior(prior, declared=entry.meta, generator=generator, strict=strict, name=label))
    return reports


__all__ = ["check_prior", "check_registered", "required_options"]
