"""Blur kernels: a Gaussian, a seeded camera-shake motion kernel, and a loader for kernel files.

Kernels are float64 ``(kh, kw)`` tensors whose centre is the sample ``(kh // 2, kw // 2)`` (the convention of
:class:`invgen.operators.blur.Blur`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invgen.errors import RangeError, ShapeError


def _pair(v: float | tuple[float, float], name: str) -> tuple[float, float]:
    pair = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(pair) != 2:
        raise ShapeError(f"{name}: expected a number or a pair, got {v!r}")
    return float(pair[0]), float(pair[1])


def gaussian_kernel(sigma: float | tuple[float, float] = 1.0, size: int | tuple[int, int] | None = None) -> Tensor:
    """A sampled Gaussian, normalised to sum 1.

    Args:
        sigma: the standard deviation in pixels, or ``(sigma_y, sigma_x)``.
        size: the kernel size (int or ``(kh, kw)``); default ``2 * ceil(3 * sigma) + 1`` per axis.

    Returns:
        ``(kh, kw)`` float64 tensor.
    """
    sy, sx = _pair(sigma, "sigma")
    if not (sy > 0 and sx > 0 and math.isfinite(sy) and math.isfinite(sx)):
        raise RangeError(f"sigma: expected finite values > 0, got {sigma!r}")
    if size is None:
        size = (2 * math.ceil(3 * sy) + 1, 2 * math.ceil(3 * sx) + 1)
    kh, kw = (int(v) for v in _pair(size, "size"))
    if kh < 1 or kw < 1:
        raise ShapeError(f"size: expected a positive kernel size, got {size!r}")
    y = torch.arange(kh, dtype=torch.float64) - kh // 2
    x = torch.arange(kw, dtype=torch.float64) - kw // 2
    k = torch.exp(-0.5 * (y[:, None] / sy) ** 2 - 0.5 * (x[None, :] / sx) ** 2)
    return k / k.sum()


def motion_kernel(size: int = 15, intensity: float = 0.5, seed: int = 0, steps: int = 1000) -> Tensor:
    """A random camera-shake blur kernel, deterministic for a seed.

    The trajectory follows the random-motion model of Boracchi & Foi (2012, as used by DeblurGAN): a 2-D particle
    moves at constant speed while its velocity receives Gaussian kicks, a pull back towards the start (centripetal
    term) and rare abrupt turns (big shakes); ``intensity`` scales the kicks and turns, from a straight line
    (``0``) to a tangled path (``1``). The path is scaled to span the kernel, centred, and rasterised with
    bilinear splatting of its samples (equal exposure per sample), then normalised to sum 1.

    Args:
        size: the kernel side in pixels (>= 3).
        intensity: shake intensity in [0, 1].
        seed: seed of the trajectory.
        steps: number of trajectory samples.

    Returns:
        ``(size, size)`` float64 tensor, non-negative, sum 1.
    """
    size, intensity = int(size), float(intensity)
    if size < 3:
        raise ShapeError(f"size: a motion kernel needs size >= 3, got {size}")
    if not 0 <= intensity <= 1:
        raise RangeError(f"intensity: expected a value in [0, 1], got {intensity}")
    rng = np.random.default_rng(seed)
    expl = 0.02 * intensity
    centripetal = 0.7 * rng.uniform()
    prob_big_shake = 0.2 * rng.uniform()
    gaussian_shake = 10 * rng.uniform()
    step = 1.0  # the path is rescaled afterwards; unit speed per sample
    v = np.exp(1j * 2 * math.pi * rng.uniform()) * step
    x = np.zeros(steps, dtype=np.complex128)
    kicks = rng.standard_normal((steps, 2))
    turns = rng.uniform(size=(steps, 2))
    for t in range(steps - 1):
        big = 0.0
        if turns[t, 0] < prob_big_shake * expl:
            big = 2 * v * np.exp(1j * (math.pi + (turns[t, 1] - 0.5)))
        dv = big + expl * (gaussian_shake * complex(kicks[t, 0], kicks[t, 1]) - centripetal * x[t] / steps) * step
        v = v + dv
        v = v / abs(v) * step
        x[t + 1] = x[t] + v
    # scale the path to span 90% of the kernel and centre its bounding box
    extent = max(np.ptp(x.real), np.ptp(x.imag), 1e-12)
    x = x * ((size - 1) * 0.9 / extent)
    x = x - complex((x.real.max() + x.real.min()) / 2, (x.imag.max() + x.imag.min()) / 2)
    x = x + complex(size // 2, size // 2)
    k = np.zeros((size, size))
    px, py = np.clip(x.real, 0, size - 1), np.clip(x.imag, 0, size - 1)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    for yy, xx, ww in (
        (y0, x0, (1 - fx) * (1 - fy)),
        (y0, x1, fx * (1 - fy)),
        (y1, x0, (1 - fx) * fy),
        (y1, x1, fx * fy),
    ):
        np.add.at(k, (yy, xx), ww)
    return torch.from_numpy(k / k.sum())


def _read_mat(path: Path, index: int | None, key: str | None) -> np.ndarray:
    import scipy.io

    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        return _read_mat73(path, index, key)
    names = [k for k in data if not k.startswith("__")]
    if key is None:
        if len(names) != 1:
            raise ValueError(f"kernel file {path.name}: holds variables {names}; choose one with key=")
        key = names[0]
    if key not in data:
        raise KeyError(f"kernel file {path.name}: no variable {key!r} (variables: {names})")
    value = data[key]
    if value.dtype == object:  # a cell array of kernels
        cells = [c for c in value.ravel()]
        return _pick(cells, index, path)
    value = np.asarray(value, dtype=np.float64)
    if value.ndim == 3:  # a stack of kernels, kernels along the last axis (MATLAB) unless it is the first
        cells = [value[..., i] for i in range(value.shape[-1])]
        return _pick(cells, index, path)
    if index not in (None, 0):
        raise IndexError(f"kernel file {path.name}: {key!r} holds a single kernel, got index={index}")
    return value


def _read_mat73(path: Path, index: int | None, key: str | None) -> np.ndarray:
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(
            f"kernel file {path.name} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; reading it needs h5py "
            "(pip install h5py)"
        ) from exc
    with h5py.File(path, "r") as f:
        names = [k for k in f if not k.startswith("#")]
        if key is None:
            if len(names) != 1:
                raise ValueError(f"kernel file {path.name}: holds variables {names}; choose one with key=")
            key = names[0]
        ds = f[key]
        if ds.dtype.kind == "O":  # a cell array: object references
            cells = [np.asarray(f[ref][()], dtype=np.float64).T for ref in ds[()].ravel()]
            return _pick(cells, index, path)
        value = np.asarray(ds[()], dtype=np.float64).T  # HDF5 stores MATLAB arrays transposed
        if value.ndim == 3:
            return _pick([value[..., i] for i in range(value.shape[-1])], index, path)
        return value


def _pick(cells: list[np.ndarray], index: int | None, path: Path) -> np.ndarray:
    if index is None:
        if len(cells) != 1:
            raise ValueError(f"kernel file {path.name} holds {len(cells)} kernels; choose one with index=0..")
        index = 0
    if not -len(cells) <= index < len(cells):
        raise IndexError(f"kernel file {path.name} holds {len(cells)} kernels, got index={index}")
    return np.asarray(cells[index], dtype=np.float64)


def load_kernel(path: str | Path, index: int | None = None, key: str | None = None) -> Tensor:
    """Read a blur kernel from a file.

    * ``.png`` (and other images): grayscale, normalised to sum 1 (image files store scaled kernels);
    * ``.mat``: the variable ``key`` (default: the file's only variable); a cell array or a 3-D stack of kernels
      needs ``index`` (0-based), e.g. ``kernels_12.mat`` of the KAIR kernels. MATLAB v7.3 files (``Levin09.mat``)
      are HDF5 and need ``h5py``;
    * ``.npy``: the array as stored.

    Values of ``.mat`` and ``.npy`` kernels are kept as stored (no renormalisation).

    Args:
        path: the kernel file.
        index: which kernel of a file holding several.
        key: which variable of a ``.mat`` file.

    Returns:
        ``(kh, kw)`` float64 tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"kernel file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        from invgen.errors import FileError

        try:
            k = _read_mat(path, index, key)
        except (ValueError, TypeError, OSError, EOFError) as exc:
            if isinstance(exc, FileError) or "kernel file" in str(exc):  # ours: already names the file
                raise
            raise FileError(f"{path}: expected a MATLAB .mat kernel file, got one scipy cannot read ({exc})") from exc
    elif suffix == ".npy":
        from invgen.files import load_npy

        k = load_npy(path, "kernel").astype(np.float64)
    else:
        from invgen.files import open_image

        with open_image(path) as im:
            k = np.asarray(im.convert("L"), dtype=np.float64)
        if k.sum() <= 0:
            raise RangeError(f"kernel file {path.name}: the image is all black")
        k = k / k.sum()
    k = np.squeeze(k)
    if k.ndim != 2 or k.size == 0:
        raise ShapeError(f"kernel file {path.name}: expected a 2-D kernel, got shape {k.shape}")
    return torch.from_numpy(np.ascontiguousarray(k))
