"""A rough estimate of a solve's time and memory, for problems large enough to run for minutes.

:func:`invgen.solve` calls :func:`estimate_cost` when one network call would carry more than :data:`LARGE_PIXELS`
pixels (``N * B * H * W``: e.g. one 1000x1000 image with a single sample, or a 512x512 photo with 4 samples), logs
the estimate as a warning and shows a progress bar (``progress=None``, the default). How it is estimated:

* **time**: one timed network call of the prior (``denoise``, else ``score``; the second of two, so one-time setup is
  not counted; with its backward pass for solvers that differentiate through the network: dps, pigdm, mmps, tds) on a
  crop of at most ``PROBE_SIZE x PROBE_SIZE`` pixels with batch 1, scaled linearly by the pixel count, the batch ``N *
  B`` and the expected number of calls (the ``steps`` option). A batched call is usually somewhat cheaper per pixel,
  so this errs on the long side; a tiling prior (``prior.tile``) adds its tiles' overlap.
* **memory**: what the same call adds to the process' peak (CUDA: ``torch.cuda.max_memory_allocated``; Linux CPU:
  ``VmHWM`` from ``/proc/self/status``, reset just before the call), scaled by pixels and batch (by at most a tile's
  pixels for a tiling prior, whose memory is bounded by its tile), plus ``STATE_COPIES`` float copies of the ``N * B``
  images for the solver's own state. Elsewhere the memory is reported as unknown.

Both are rough guides (a factor of 2 either way is usual), never a promise.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# a network call carrying more pixels than this (N * B * H * W) makes solve() estimate, warn and show progress
LARGE_PIXELS = 1_000_000
PROBE_SIZE = 256
# float copies of the N * B images a solver keeps besides the network's activations (x, x0, noise, gradient, ...)
STATE_COPIES = 6
# solvers that backpropagate through the prior's network at every step (a backward pass costs about 2 forward ones)
GRAD_SOLVERS = frozenset({"dps", "pigdm", "mmps", "tds"})


@dataclass(frozen=True)
class CostEstimate:
    """What :func:`estimate_cost` found.

    Attributes:
        seconds: estimated wall-clock time of the solve.
        bytes: estimated peak memory the solve adds, or None where it cannot be measured.
        calls: expected network calls (the ``steps`` option).
        shape: ``(N * B, C, H, W)``, what one call carries.
        probe: ``(h, w)`` of the timed crop; probe_seconds: its time.
        how: one line on how it was estimated.
    """

    seconds: float
    bytes: int | None
    calls: int
    shape: tuple[int, int, int, int]
    probe: tuple[int, int]
    probe_seconds: float
    how: str

    def describe(self) -> str:
        """``"estimated 12 min and 3.1 GiB for 4 x 1x4000x6000 images, 50 network calls (...)"``."""
        nb, c, h, w = self.shape
        mem = f"{format_bytes(self.bytes)}" if self.bytes is not None else "unknown memory"
        return (
            f"large problem: {nb} x {c}x{h}x{w} image(s) per network call, {self.calls} calls; estimated "
            f"{format_seconds(self.seconds)} and {mem} ({self.how})"
        )


def format_seconds(s: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_bytes(n: int) -> str:
    """``512 MiB``, ``3.1 GiB``, ``22.7 TiB`` (``3 KiB``, ``100 bytes`` below a MiB)."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024**2:
        return f"{n / 1024:.0f} KiB"
    if n < 1024**3:
        return f"{n / 1024**2:.0f} MiB"
    if n < 1024**4:
        return f"{n / 1024**3:.1f} GiB"
    return f"{n / 1024**4:.1f} TiB"


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}  # fmt: skip
MEMORY_ENV = "INVGEN_MAX_MEMORY"


def parse_bytes(value: object, name: str = "max_memory") -> float:
    """A memory size as bytes: a number, or a string such as ``"64G"``, ``"512 MiB"``, ``"2e9"``; ``"off"`` (or
    ``inf``) means no limit. Raises ``ValueError`` naming ``name`` for anything else."""
    import re

    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    text = str(value).strip().lower()
    if text in ("off", "none", "inf", "unlimited"):
        return float("inf")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)", text)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and m and m.group(2) in _UNITS:
        n = float(m.group(1)) * _UNITS[m.group(2)]
        if n > 0:
            return n
    raise ValueError(f"{name}: expected a memory size > 0 such as 64G, 512MiB or 2e9 bytes (or off), got {value!r}")


def total_memory(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """``(bytes, what)``: the memory of ``device`` (a CUDA GPU's, else this machine's RAM, from psutil when installed
    or ``os.sysconf``), or ``(None, ...)`` where it cannot be read."""
    import os

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory), f"the memory of GPU cuda:{index}"
    try:
        import psutil

        return int(psutil.virtual_memory().total), "this machine's RAM"
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "this machine's RAM"
    except (AttributeError, ValueError, OSError):
        return None, "unknown"


def check_memory(
    x_shape: tuple[int, ...],
    n_samples: int,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    max_memory: object = None,
    copies: int = STATE_COPIES,
) -> int:
    """Refuse, before any allocation, a solve whose state alone would not fit: ``copies`` copies of the ``N * B``
    images (:data:`STATE_COPIES`: x, x0, noise, gradient, ...), a floor on what any solver needs.

    Args:
        x_shape: ``(B, C, H, W)`` of the images solved for.
        n_samples: N.
        dtype: the working dtype.
        device: where the solve runs (its memory is the default limit).
        max_memory: the limit in bytes or as a string (``"64G"``; ``"off"``: none); None: ``INVGEN_MAX_MEMORY``,
            else the device's total memory (:func:`total_memory`).
        copies: the image copies a solver keeps.

    Returns:
        The estimate in bytes.

    Raises:
        MemoryLimitError: with the estimate, the limit and how to raise it.
    """
    import math
    import os

    from invgen.errors import MemoryLimitError

    itemsize = torch.empty((), dtype=dtype).element_size()
    estimate = copies * n_samples * math.prod(int(s) for s in x_shape) * itemsize
    if max_memory is None and os.environ.get(MEMORY_ENV, "").strip():
        limit, what = parse_bytes(os.environ[MEMORY_ENV], MEMORY_ENV), MEMORY_ENV
    elif max_memory is not None:
        limit, what = parse_bytes(max_memory), "max_memory"
    else:
        total, what = total_memory(device)
        limit = float(total) if total is not None else float("inf")
    if estimate > limit:
        size = "x".join(str(int(s)) for s in x_shape[1:])
        raise MemoryLimitError(
            f"n_samples={n_samples}: the solver's state alone needs an estimated {format_bytes(estimate)} "
            f"({copies} copies of {n_samples} x {int(x_shape[0])} image(s) of {size} in "
            f"{str(dtype).replace('torch.', '')}), "
            f"above the memory limit of {format_bytes(int(limit))} ({what}); ask for fewer samples (or solve in "
            f"batches), or raise the limit with max_memory= (CLI: --max-memory) or {MEMORY_ENV} (e.g. 512G; off: "
            "no limit)"
        )
    return estimate


def expected_calls(solver: Any) -> int | None:
    """The network calls a solver will make, from its ``steps`` option (or that option's default); None if it has
    none."""
    steps = getattr(solver, "options", {}).get("steps")
    if steps is None and hasattr(solver, "fn"):
        p = inspect.signature(solver.fn).parameters.get("steps")
        steps = p.default if p is not None and p.default is not inspect.Parameter.empty else None
    return int(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None


def is_large(x_shape: tuple[int, ...], n_samples: int) -> bool:
    """Whether one network call would carry more than :data:`LARGE_PIXELS` pixels."""
    return n_samples * x_shape[0] * x_shape[-1] * x_shape[-2] > LARGE_PIXELS


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _probe(prior: Any, x: torch.Tensor, grad: bool, denoiser: bool) -> None:
    sigma = min(0.5, float(getattr(prior, "sigma_max", 0.5)))
    with torch.enable_grad() if grad else torch.no_grad():
        xg = x.detach().requires_grad_(grad)
        out = prior.denoise(xg, sigma) if denoiser else prior.score(xg, sigma)
        if grad:
            torch.autograd.grad(out.sum(), xg)


def estimate_cost(
    prior: Any, solver: Any, x_shape: tuple[int, ...], n_samples: int, device: torch.device | str = "cpu"
) -> CostEstimate | None:
    """Estimate the time and memory of a solve (module docstring): one timed call of the prior on a crop.

    Args:
        prior: a prior with ``denoise`` or ``score`` (others: None is returned).
        solver: the :class:`~invgen.solvers.base.Solver` to run (its name and ``steps``).
        x_shape: ``(B, C, H, W)`` of the images to solve for.
        n_samples: N.
        device: where the solve runs.

    Returns:
        A :class:`CostEstimate`, or None for a prior with neither capability or a solver without ``steps``.
    """
    from invgen.priors.base import capabilities_of

    caps = capabilities_of(prior)
    calls = expected_calls(solver)
    if calls is None or not ({"denoiser", "score"} & caps):
        return None
    b, c, h, w = (int(s) for s in x_shape)
    nb = n_samples * b
    ph, pw = min(h, PROBE_SIZE), min(w, PROBE_SIZE)
    grad = getattr(solver, "name", "") in GRAD_SOLVERS
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(1, c, ph, pw, generator=g)).clamp(0, 1).to(dev)
    _probe(prior, x, grad, "denoiser" in caps)  # warm-up: one-time setup (layouts, caches) is not the per-call cost
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = _vm_hwm() if _reset_hwm() else None
    t0 = time.perf_counter()
    _probe(prior, x, grad, "denoiser" in caps)
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    if cuda:
        peak: int | None = torch.cuda.max_memory_allocated(dev) - base
    else:
        after = _vm_hwm() if base is not None else None
        peak = after - base if after is not None and base is not None else None
    scale = (h * w) / (ph * pw)
    tile = getattr(prior, "tile", None)
    tiled = isinstance(tile, int) and max(h, w) > tile
    overlap = int(getattr(prior, "tile_overlap", 32)) if tiled else 0
    if tiled:
        scale *= (tile / max(1, tile - overlap)) ** 2
    total_seconds = seconds * scale * nb * calls
    total_bytes: int | None = None
    if peak is not None:
        per_pixel = max(0, peak) / (ph * pw)
        net_pixels = min(h * w, tile * tile) if tiled else h * w
        state = STATE_COPIES * nb * c * h * w * torch.finfo(torch.float32).bits // 8
        total_bytes = int(per_pixel * net_pixels * nb + state)
    kind = "forward and backward" if grad else "forward"
    how = (
        f"rough: one {kind} network call on a {ph}x{pw} crop took {seconds:.2g} s, scaled by pixels x {nb} "
        f"sample(s) x {calls} calls{'; tiled' if tiled else ''}"
    )
    return CostEstimate(total_seconds, total_bytes, calls, (nb, c, h, w), (ph, pw), seconds, how)


def progress_bar(total: int | None, desc: str) -> Any:
    """A tqdm bar over network calls (on stderr)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="call", dynamic_ncols=True, mininterval=0.5)
