"""Plugin manager, hook specifications and the name -> factory registries.

Every prior, solver, operator, dataset, metric and trainer reaches invgen through a pluggy hook that receives a
``register`` callback; registration stores a *factory* (never a loaded network), so listing what is installed is
cheap. Plugins are found through the ``invgen`` entry-point group, the built-in families exactly like third-party
ones. A plugin is reported by name, with the reason, and skipped, while the host keeps working, when it raises
anything but ``KeyboardInterrupt`` while it is imported or while its hook runs (``sys.exit()`` included), when pluggy
refuses its hook implementations (an argument the hook does not have), and when it implements a hook invgen does not
have (a misspelled name; mark a hook of a newer invgen ``@invgen.hookimpl(optionalhook=True)``):
:func:`plugin_failures` lists them and ``invgen plugins`` prints them.

Example:
    >>> import invgen
    >>> class MyPlugin:
    ...     @invgen.hookimpl
    ...     def register_priors(self, register):
    ...         register("my-prior", lambda **kw: MyPrior(**kw), capabilities=("denoiser",))
    >>> invgen.plugin_manager().register(MyPlugin(), name="my-plugin")
"""

from __future__ import annotations

import difflib
import threading
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from invgen.capabilities import CAPABILITIES, LOG_PROB_KINDS, unknown_names
from invgen.errors import PluginError, UnknownNameError

PROJECT = "invgen"
ENTRY_POINT_GROUP = "invgen"
KINDS = ("priors", "solvers", "operators", "datasets", "metrics", "trainers", "converters")

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a plugin may implement. Each receives ``register(name, factory, **meta)``."""

    @hookspec
    def register_priors(self, register: Callable[..., None]) -> None:
        """Register priors: ``register(name, factory, capabilities=(...), description=..., image_shape=...)``.

        ``factory(**kwargs)`` builds the prior (loading weights only then). ``capabilities`` lists what the prior
        offers among ``denoiser``, ``score``, ``log_density`` and ``generator``, so listing needs no loading; a name
        outside that list is refused (:class:`~invgen.errors.PluginError`), and so is a ``log_prob_kind`` other than
        ``exact``, ``bound`` or ``unnormalized``. Optional ``image_shape=(C, H, W)`` (None: any size) and
        ``datasets=(...)`` (registered dataset names the prior models) let benchmark suites match priors to datasets
        (``priors: auto``) without loading them. Optional ``examples=[{...}, ...]`` are factory options that build
        small instances, which ``invgen check-prior`` (:func:`invgen.testing.check_prior`) checks; a prior whose
        factory needs options should give them.
        """

    @hookspec
    def register_solvers(self, register: Callable[..., None]) -> None:
        """Register solvers: ``register(name, factory, needs=(...), operators="any", description=...)``.

        ``factory(**options)`` returns an :class:`invgen.solvers.base.Solver`; ``needs`` are the capabilities the
        solver requires of a prior (an empty tuple for baselines that use none); ``operators`` is what it requires
        of the operator: ``"any"`` (default), ``"linear"``, ``"svd"`` (linear with a cheap SVD) or ``"inpaint"`` (a
        pixel mask: the ``inpaint`` or ``identity`` operator).
        """

    @hookspec
    def register_operators(self, register: Callable[..., None]) -> None:
        """Register degradation operators: ``register(name, factory, linear=bool, examples=[...], description=...)``.

        ``examples`` is a list of ``(kwargs, input_shape)`` pairs; the test-suite runs the adjointness and
        pseudo-inverse checks on each, so a new linear operator is tested the moment it is registered.
        """

    @hookspec
    def register_datasets(self, register: Callable[..., None]) -> None:
        """Register datasets: ``register(name, factory, description=..., shape=(C, H, W) or None, files=...)``.

        ``factory(**kw)`` returns an :class:`invgen.data.base.Dataset`; ``shape`` is the fixed image shape (None
        when sizes vary) and ``files`` the data files it reads, relative to the data root.
        """

    @hookspec
    def register_metrics(self, register: Callable[..., None]) -> None:
        """Register metrics: ``register(name, fn, higher_is_better=bool, description=...)``.

        ``fn(x, reference) -> (B,)`` compares image batches in [0, 1].
        """

    @hookspec
    def register_trainers(self, register: Callable[..., None]) -> None:
        """Register trainers: ``register(name, factory, description=...)``; used by ``invgen train NAME``."""

    @hookspec
    def register_converters(self, register: Callable[..., None]) -> None:
        """Register checkpoint converters: ``register(name, factory, description=...)``; used by
        ``invgen convert NAME``. ``factory()`` returns an object with ``description``, ``add_arguments(parser)`` and
        ``run(options) -> int`` (like a trainer); a converter reads a foreign checkpoint with
        ``torch.load(..., weights_only=True)`` only and writes a weight folder (``model.safetensors`` +
        ``config.json`` with the SHA-256 of both files)."""


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, its factory, where it came from and what it declared."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    meta: dict[str, Any] = field(default_factory=dict)

    def create(self, **kwargs: Any) -> Any:
        """Build the component."""
        return self.factory(**kwargs)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, or whose hook raised.

    ``stage`` is ``import`` (loading the entry point raised), ``register`` (pluggy refused the plugin: a hook
    argument that the hook does not have, an unknown hook name, no hook at all) or ``register_<kind>`` (that hook
    raised; the plugin's other hooks still count).
    """

    plugin: str
    distribution: str
    stage: str
    error: str
    traceback: str


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager that also refuses, at registration, a hook implementation whose name matches no hook spec
    (pluggy's ``check_pending``, for the one plugin): a misspelled hook would otherwise be ignored without a word.
    Hooks marked ``optionalhook=True`` are let through (a plugin written for a newer invgen)."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is None:
            return None
        unknown = _unknown_hooks(self, plugin)
        if unknown:
            self.unregister(plugin)
            raise pluggy.PluginValidationError(plugin, f"plugin {registered!r}: " + "; ".join(unknown))
        return registered


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Descriptions of ``plugin``'s hook implementations that match no hook spec (``optionalhook`` ones aside)."""
    known = [n for n in dir(HookSpecs) if n.startswith("register_")]
    out = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            close = difflib.get_close_matches(caller.name, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"unknown hook {caller.name!r}{hint}; invgen's hooks are {', '.join(known)} (mark a hook of a newer "
                "invgen @invgen.hookimpl(optionalhook=True))"
            )
    return out


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_loading = False
_failures: list[PluginFailure] = []
_distributions: dict[str, str] = {}
_cache: dict[tuple[str, tuple[int, ...]], tuple[dict[str, Entry], list[PluginFailure]]] = {}


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (pluggy's validation messages span several)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({'' if exc.code is None else repr(exc.code)})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {'; '.join(lines)}" if lines else type(exc).__name__


def _fail(plugin: str, dist: str, stage: str, exc: BaseException, what: str) -> None:
    """Record and warn about a plugin that is skipped (a one-line reason; the traceback is kept in the failure)."""
    reason = _one_line(exc)
    _failures.append(PluginFailure(plugin, dist, stage, reason, traceback.format_exc()))
    warnings.warn(
        f"invgen: plugin {plugin!r} from distribution {dist!r} {what} and is skipped ({reason})",
        RuntimeWarning,
        stacklevel=4,
    )


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    import importlib.metadata  # here, not at module level: it is half the cost of ``import invgen``

    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit and the like too: a broken plugin never breaks the host
            _fail(ep.name, dist, "import", exc, "failed to import")
            continue
        try:
            if plugin is None:
                raise PluginError(f"entry point {ep.value!r} is None")
            pm.register(plugin, name=ep.name)
            if not pm.get_hookcallers(plugin):
                pm.unregister(plugin)
                raise PluginError(
                    f"entry point {ep.value!r} implements no invgen hook (are its functions decorated with "
                    "@invgen.hookimpl?)"
                )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy's validation errors, an unknown hook, a duplicate plugin
            _fail(ep.name, dist, "register", exc, "was refused by the plugin manager")
            continue
        _distributions[ep.name] = dist


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use.

    It holds the core (operators, solvers, metrics) and every plugin of the ``invgen`` entry-point group.
    Register an in-memory plugin with ``plugin_manager().register(obj, name=...)``; the registries see it at once.
    A hook implementation whose name matches no hook raises :class:`pluggy.PluginValidationError` there.
    """
    global _pm, _loading
    with _lock:
        if _pm is None:
            if _loading:  # a plugin called into the registry while it was being imported
                raise PluginError(
                    "a plugin used invgen's registry while being imported; look components up in a hook or a "
                    "factory, not at import time"
                )
            _loading = True
            try:
                pm = _PluginManager(PROJECT)
                pm.add_hookspecs(HookSpecs)
                from invgen import builtin

                pm.register(builtin, name="invgen-core")
                _distributions["invgen-core"] = "invgen"
                _load_entry_points(pm)
            finally:
                _loading = False
            _pm = pm
        return _pm


def reset() -> None:
    """Forget the plugin manager and every cached registry (used by tests)."""
    global _pm
    with _lock:
        _pm = None
        _failures.clear()
        _distributions.clear()
        _cache.clear()


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to import or whose hooks raised, in the order they failed."""
    for kind in KINDS:
        _registry(kind)
    seen: dict[tuple[str, str], PluginFailure] = {}
    for f in _failures + [f for _, fails in _cache.values() for f in fails]:
        seen.setdefault((f.plugin, f.stage), f)
    return list(seen.values())


def distribution_of(plugin_name: str) -> str:
    """The distribution a plugin came from (``"<in-memory>"`` for plugins registered by hand)."""
    return _distributions.get(plugin_name, "<in-memory>")


def _registry(kind: str) -> dict[str, Entry]:
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")
    pm = plugin_manager()
    key = (kind, tuple(id(p) for p in pm.get_plugins()))
    with _lock:
        if key in _cache:
            return _cache[key][0]
        entries: dict[str, Entry] = {}
        failures: list[PluginFailure] = []
        caller = getattr(pm.hook, f"register_{kind}")
        for impl in caller.get_hookimpls():  # registration order: the core first, then entry points
            plugin_name = impl.plugin_name
            dist = distribution_of(plugin_name)

            def register(name: str, factory: Callable[..., Any], _p: str = plugin_name, _d: str = dist, **meta: Any):
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_p!r}: a {kind[:-1]} name must be a non-empty string, got {name!r}")
                if not callable(factory):
                    raise PluginError(f"plugin {_p!r}: the factory of {kind[:-1]} {name!r} is not callable")
                if kind in ("priors", "solvers"):
                    _check_capability_meta(kind, name, _p, meta)
                if name in entries:
                    other = entries[name]
                    warnings.warn(
                        f"invgen: {kind[:-1]} {name!r} from plugin {_p!r} ({_d}) is ignored: plugin "
                        f"{other.plugin!r} ({other.distribution}) registered it first",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    return
                entries[name] = Entry(kind, name, factory, _p, _d, dict(meta))

            try:
                impl.function(*[register for _ in impl.argnames])  # as pluggy calls it: the arguments it declares
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit and the like too: a broken plugin never breaks the host
                reason = _one_line(exc)
                failures.append(PluginFailure(plugin_name, dist, f"register_{kind}", reason, traceback.format_exc()))
                warnings.warn(
                    f"invgen: plugin {plugin_name!r} ({dist}) raised in register_{kind} and is skipped for {kind} "
                    f"({reason})",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = (entries, failures)
        return entries


def _check_capability_meta(kind: str, name: str, plugin: str, meta: dict[str, Any]) -> None:
    """Refuse capability names (a prior's ``capabilities``, a solver's ``needs``) and a ``log_prob_kind`` that
    invgen does not know: a typo would otherwise make a prior invisible to the solvers that could use it."""
    key = "capabilities" if kind == "priors" else "needs"
    what = f"plugin {plugin!r}: {kind[:-1]} {name!r}"
    names = meta.get(key, ())
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise PluginError(f"{what}: {key} must be a tuple of capability names, got {names!r} (e.g. {key}=('score',))")
    problem = unknown_names(names, CAPABILITIES)
    if problem:
        raise PluginError(f"{what} declares {problem}")
    kind_of_log_prob = meta.get("log_prob_kind")
    if kind == "priors" and kind_of_log_prob is not None and kind_of_log_prob not in LOG_PROB_KINDS:
        raise PluginError(
            f"{what}: {unknown_names((kind_of_log_prob,), LOG_PROB_KINDS, 'log_prob_kind', 'log_prob_kinds')}"
        )


def entries(kind: str) -> dict[str, Entry]:
    """All registered entries of one kind (``"priors"``, ``"solvers"``, ...), by name."""
    return dict(_registry(kind))


def names(kind: str) -> list[str]:
    """Sorted names registered for one kind."""
    return sorted(_registry(kind))


def get(kind: str, name: str) -> Entry:
    """Look up one entry; an unknown name raises :class:`UnknownNameError` listing close matches."""
    reg = _registry(kind)
    if not isinstance(name, str):
        raise TypeError(f"{kind[:-1]} name: expected a string, got {type(name).__name__}")
    if name in reg:
        return reg[name]
    close = difflib.get_close_matches(name, list(reg), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(sorted(reg)) or "none"
    raise UnknownNameError(f"unknown {kind[:-1]} {name!r}{hint} (registered {kind}: {known})")
