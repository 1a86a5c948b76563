"""Exception types raised by invgen.

Every error says what was expected and what came, so a user can fix the call without reading the source.
"""

from __future__ import annotations


class InvgenError(Exception):
    """Base class of every error raised by invgen."""


class ShapeError(InvgenError, ValueError):
    """A tensor has the wrong number of dimensions, channels or spatial size."""


class RangeError(InvgenError, ValueError):
    """A tensor holds values outside the allowed range, or NaN/Inf."""


class UnknownNameError(InvgenError, LookupError):
    """A registry lookup used a name that no plugin registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class MissingCapabilityError(InvgenError, TypeError):
    """A solver was given a prior that lacks a capability the solver needs."""


class PluginError(InvgenError, RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


class ConformanceError(PluginError):
    """A plugin's component breaks its contract: raised by :func:`invgen.testing.check_prior` with ``strict=True``.

    Attributes:
        check: the first failed check (its ``name`` and ``message``), or None.
        report: the report up to and including that check, or None.
    """

    def __init__(self, message: str, check: object = None, report: object = None) -> None:
        super().__init__(message)
        self.check = check
        self.report = report


class NonFiniteError(RangeError):
    """A tensor holds NaN or Inf values (a :class:`RangeError`, so ``except RangeError`` still catches it)."""


class DivergenceError(InvgenError, RuntimeError):
    """A solver's state left the finite numbers or exploded: the message names the solver, the step and the option
    to change (its step size, guidance scale or number of steps).

    Attributes:
        solver: the solver's registry name.
        step: the step at which the divergence was seen (None: seen in the returned samples).
    """

    def __init__(self, message: str, solver: str = "", step: int | None = None) -> None:
        super().__init__(message)
        self.solver = solver
        self.step = step
