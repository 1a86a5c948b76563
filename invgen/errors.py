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
