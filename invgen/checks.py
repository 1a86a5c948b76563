"""Input validation shared by the public entry points.

Clean images are ``(B, C, H, W)`` tensors in [0, 1]; observations and noisy states are finite real tensors with no
range constraint. These helpers raise :mod:`invgen.errors` exceptions that state what was expected and what came.
"""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from invgen.errors import DeviceError, NonFiniteError, OptionError, RangeError, ShapeError


def describe(x: object) -> str:
    """Short description of a value for error messages."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def check_tensor(x: object, name: str = "x") -> torch.Tensor:
    """Raise unless ``x`` is a floating point tensor with only finite values (:class:`NonFiniteError` otherwise, a
    :class:`RangeError`)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {describe(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got dtype {x.dtype} (convert with .float() / 255)")
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{name}: expected finite values, got {n_bad} NaN/Inf entries in {describe(x)}")
    return x


def check_image(
    x: object,
    name: str = "x",
    *,
    channels: int | tuple[int, ...] | None = None,
    clean: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Validate an image batch.

    Args:
        x: the tensor to check.
        name: how the tensor is called in the error message.
        channels: the allowed channel count(s), or None for any.
        clean: if True, values must lie in [0, 1] (a clean image); otherwise any finite value is accepted.
        size: the required spatial size ``(H, W)``, or None for any.

    Returns:
        ``x`` unchanged.

    Shape:
        x: ``(B, C, H, W)``.
    """
    check_tensor(x, name)
    assert isinstance(x, torch.Tensor)
    if x.dim() != 4:
        hint = " (add a batch dimension with x[None])" if x.dim() == 3 else ""
        raise ShapeError(f"{name}: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}{hint}")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[1] not in allowed:
            want = " or ".join(str(c) for c in allowed)
            raise ShapeError(f"{name}: expected {want} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ShapeError(f"{name}: expected spatial size {tuple(size)}, got {tuple(x.shape[-2:])}")
    if clean:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise RangeError(
                f"{name}: expected a clean image with values in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                "(scale uint8 images by 1/255; observations y may leave [0, 1] but ground truths may not)"
            )
    return x


# how far outside its range an image may be before check_range refuses it: float round-off, not a real excursion
RANGE_ATOL = 1e-6


def check_range(
    x: torch.Tensor, name: str = "x", high: float = 1.0, *, who: str = "", atol: float = RANGE_ATOL, fix: str = ""
) -> torch.Tensor:
    """Raise a :class:`RangeError` unless every value of ``x`` lies in ``[0, high]`` within ``atol``.

    The message names the caller (``who``) and the tensor, gives the expected range and the min/max that came, and
    says how to fix the call: images on the 0..255 scale are to be divided by 255, values slightly out of range are
    to be clamped by the caller (``fix`` replaces that last advice when given).

    Args:
        x: a finite floating point tensor (see :func:`check_tensor`).
        name: how the tensor is called in the error message.
        high: the top of the range (1 for images on the [0, 1] scale).
        who: the public function that checks, e.g. ``"psnr"``.
        atol: tolerated excursion below 0 and above ``high``.
        fix: the advice for values slightly out of range.

    Returns:
        ``x`` unchanged.
    """
    if x.numel() == 0:
        return x
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo >= -atol and hi <= high + atol:
        return x
    scale = f"[0, {high:g}]"
    if high <= 1.0 and hi > 2.0 and lo >= -atol and hi <= 255.0 + atol:
        advice = "the values look like 0..255 pixels: divide by 255 (x / 255) to put the image on the [0, 1] scale"
    else:
        advice = fix or f"clamp the values explicitly, x.clamp(0, {high:g}), if they leave {scale} only slightly"
    prefix = f"{who}: " if who else ""
    raise RangeError(
        f"{prefix}{name}: expected values in {scale} (within {atol:g}), got values in [{lo:.4g}, {hi:.4g}]; {advice}"
    )


def as_sigma(sigma: float | torch.Tensor, x: torch.Tensor, name: str = "sigma") -> torch.Tensor:
    """Broadcast a noise level to ``(B, 1, 1, 1)`` on ``x``'s device and dtype.

    Args:
        sigma: a float, a 0-d tensor, a ``(B,)`` or ``(B, 1, 1, 1)`` tensor of noise standard deviations on the
            [0, 1] scale.
        x: the batch the noise level belongs to, ``(B, ...)``.
        name: how the value is called in error messages.
    """
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == x.dim() and all(n == 1 for n in s.shape[1:]):  # already broadcast (B, 1, 1, 1)
        s = s.reshape(-1)
    if s.dim() == 0:
        s = s.expand(x.shape[0])
    if s.dim() != 1 or s.shape[0] not in (1, x.shape[0]):
        raise ShapeError(f"{name}: expected a scalar or a ({x.shape[0]},) tensor, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise RangeError(f"{name}: expected finite values >= 0, got {s.tolist()}")
    return s.expand(x.shape[0]).reshape(-1, *([1] * (x.dim() - 1)))


def check_latents(z: object, d: int, who: str) -> torch.Tensor:
    """``z`` as a ``(B, d)`` tensor of latents, else a ``ShapeError`` naming ``who`` and what came."""
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != d:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ShapeError(f"{who}: expected latents of shape (B, {d}), got {got}")
    return z


def available_devices() -> list[str]:
    """The devices torch can use on this machine: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps`` where
    present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: object, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this machine has, else a :class:`DeviceError` listing the available ones.

    Refuses strings torch does not parse (``"gpu"``), ``"cuda"`` without CUDA, a CUDA index beyond the GPUs present
    (``"cuda:3"`` on one GPU), and other backends that are not available.

    Args:
        device: a string (``"cpu"``, ``"cuda"``, ``"cuda:1"``), a ``torch.device`` or a CUDA index.
        name: how the value is called in the message (``"--device"``).
    """
    available = ", ".join(available_devices())
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise DeviceError(f"{name}: expected a device name (one of {available}), got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"{name}: expected a device (available here: {available}), got {device!r}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
            raise DeviceError(
                f"{name}: got {device!r}, but CUDA is not available on this machine (torch {torch.__version__}, "
                f"{build}); available devices: {available}"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{name}: got {device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"available devices: {available}"
            )
        return dev
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and is_available():
        return dev
    raise DeviceError(f"{name}: got {device!r}, but {dev.type} is not available here; available devices: {available}")


# the annotation words check_options understands; an option annotated with anything else is not checked
_KINDS: dict[str, str] = {"float": "a float", "int": "an int", "bool": "a bool", "str": "a string", "None": "None"}


def _kinds(annotation: object) -> list[str] | None:
    """The simple types an annotation allows (``"float | None"`` -> ``["float", "None"]``), or None when it names
    anything else (tensors, tuples, callables: not checked)."""
    if isinstance(annotation, type) and annotation.__name__ in _KINDS:
        return [annotation.__name__]
    if not isinstance(annotation, str):
        return None
    parts = [p.strip() for p in annotation.split("|")]
    return parts if all(p in _KINDS for p in parts) else None


def _fits(value: object, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, not to an option that wants a number
        return False
    if kind == "int":
        return isinstance(value, numbers.Integral)
    if kind == "float":
        return isinstance(value, numbers.Real)
    return isinstance(value, (str, os.PathLike))  # a path where a string is annotated is what it means


def check_options(fn: Callable[..., Any], options: Mapping[str, Any], owner: str, skip: tuple[str, ...] = ()) -> None:
    """Check keyword options against ``fn``'s signature before it runs: unknown names, and values whose type does
    not fit the parameter's annotation (``float``, ``int``, ``bool``, ``str``, ``None`` and their unions; options
    annotated otherwise, and tensors, devices and dtypes, are not checked; a path counts as a string).

    Args:
        fn: the function the options go to (a solver's sampler, a prior's factory).
        options: the options.
        owner: what the options belong to, for the message (``"solver 'ddim'"``).
        skip: parameters that are not options (``prior``, ``y``...).

    Raises:
        OptionError: naming the option, the type it expects and the value that came.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C function: nothing to check against
        return
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        takes = [k for k, p in params.items() if k not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise OptionError(
                f"{owner}: unknown option(s) {unknown}; its options are {takes}",
                option=unknown[0],
                owner=owner,
            )
    for key, value in options.items():
        p = params.get(key)
        kinds = _kinds(p.annotation) if p is not None else None
        torch_value = isinstance(value, (torch.Tensor, torch.device, torch.dtype))  # annotated loosely, often
        if kinds is None or torch_value or any(_fits(value, k) for k in kinds):
            continue
        want = " or ".join(_KINDS[k] for k in kinds)
        default = f", default {p.default!r}" if p.default is not inspect.Parameter.empty else ""
        raise OptionError(
            f"{owner}: option {key} expects {want}{default}, got {value!r} ({type(value).__name__})",
            option=key,
            owner=owner,
        )
