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


class WeightsError(InvgenError, ValueError):
    """A weight folder or file cannot be used: checksum mismatch, truncated, empty or non-safetensors content
    (pickles are never loaded), NaN/Inf tensors, missing, unexpected or misshapen tensors, or a broken or incomplete
    ``config.json``. The message names the file and what is wrong.

    Attributes:
        path: the file (or folder) at fault.
    """

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class OptionError(InvgenError, TypeError):
    """An option of a solver, a prior or a noise model is unknown, missing or of the wrong type (``eta="abc"`` for a
    float option); the message names the option, what it expects and what came.

    Attributes:
        option: the option's name.
        owner: what the option belongs to, e.g. ``"solver 'ddim'"``.
    """

    def __init__(self, message: str, option: str = "", owner: str = "") -> None:
        super().__init__(message)
        self.option = option
        self.owner = owner


class DeviceError(InvgenError, ValueError):
    """A device string that torch does not know (``"gpu"``), or a device this machine lacks (``"cuda"`` without
    CUDA); the message lists the available devices."""


class MemoryLimitError(InvgenError, MemoryError):
    """A request whose estimated memory exceeds the limit (the machine's memory by default): refused before any
    allocation, with the estimate, the limit and how to raise it."""


class FileError(InvgenError, OSError):
    """A file or folder given by the user cannot be used: an image that is empty, truncated, not an image, a folder
    or above the pixel limit; an output folder that cannot be written. The message names the file (an ``OSError``,
    so ``except OSError`` still catches it).

    Attributes:
        path: the file or folder at fault.
    """

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path
