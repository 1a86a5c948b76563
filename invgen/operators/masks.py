"""Inpainting masks: seeded generators and a loader, each returning a ``(1, 1, H, W)`` float tensor.

Convention: **1 = observed, 0 = missing (hole)**. Generators are deterministic for a given ``(size, seed)`` (they draw
from ``numpy.random.default_rng(seed)``), so a benchmark can rebuild the exact same mask from its config.

Example:
    >>> from invgen.operators.masks import freeform_mask
    >>> m = freeform_mask((64, 64), hole_range=(0.2, 0.4), seed=0)
    >>> m.shape, 0.2 <= 1 - float(m.mean()) <= 0.4
    (torch.Size([1, 1, 64, 64]), True)
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invgen.errors import RangeError, ShapeError

MASK_SIDES = ("left", "right", "top", "bottom")


def image_size(size: int | tuple[int, int], name: str = "size") -> tuple[int, int]:
    """Normalise ``size`` (an int or ``(H, W)``) to a pair of positive ints."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
        raise ShapeError(f"{name}: expected a positive int or a pair (H, W) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def _as_mask(observed: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(observed, dtype=np.float32))[None, None]


def box_mask(
    size: int | tuple[int, int],
    box_size: int | float | tuple[int, int] | tuple[float, float] | None = None,
    position: str = "center",
    seed: int = 0,
) -> Tensor:
    """A rectangular hole.

    Args:
        size: image size ``(H, W)`` (or an int for a square).
        box_size: the hole's size: an int (square side in pixels), a pair ``(h, w)`` of ints, a float in (0, 1]
            (fraction of each side: ``1`` is one pixel, ``1.0`` the whole side) or a pair of such floats.
            Default: half of each side (a centred square of half the side on a square image).
        position: ``"center"`` (centred; odd margins put the extra pixel below/right) or ``"random"`` (uniform
            over the positions that keep the box inside the image, drawn from ``seed``).
        seed: seed of the random position.

    Returns:
        ``(1, 1, H, W)`` float32 mask, 0 inside the box.
    """
    h_img, w_img = image_size(size)
    if box_size is None:
        box_size = 0.5
    pair = tuple(box_size) if isinstance(box_size, (tuple, list)) else (box_size, box_size)
    if len(pair) != 2:
        raise ShapeError(f"box_size: expected an int, a float or a pair, got {box_size!r}")
    hw = []
    for v, n in zip(pair, (h_img, w_img)):
        if isinstance(v, (float, np.floating)):
            if not 0 < v <= 1:
                raise RangeError(f"box_size: a fractional box size must lie in (0, 1], got {v}")
            hw.append(max(1, round(float(v) * n)))
        elif isinstance(v, (int, np.integer)):
            hw.append(int(v))
        else:
            raise TypeError(f"box_size: expected ints (pixels) or floats (fractions), got {box_size!r}")
    bh, bw = hw
    if not (1 <= bh <= h_img and 1 <= bw <= w_img):
        raise ShapeError(f"box_size: a box of {bh}x{bw} pixels does not fit an image of {h_img}x{w_img}")
    if position == "center":
        top, left = (h_img - bh) // 2, (w_img - bw) // 2
    elif position == "random":
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, h_img - bh + 1)), int(rng.integers(0, w_img - bw + 1))
    else:
        raise ValueError(f"position: expected 'center' or 'random', got {position!r}")
    observed = np.ones((h_img, w_img), dtype=np.float32)
    observed[top : top + bh, left : left + bw] = 0
    return _as_mask(observed)


def random_mask(size: int | tuple[int, int], ratio: float = 0.7, seed: int = 0) -> Tensor:
    """Pixels missing independently with probability ``ratio`` (so about ``ratio * H * W`` holes).

    Args:
        size: image size ``(H, W)``.
        ratio: the probability that a pixel is missing, in [0, 1].
        seed: seed of the draw.

    Returns:
        ``(1, 1, H, W)`` float32 mask.
    """
    h, w = image_size(size)
    ratio = float(ratio)
    if not 0 <= ratio <= 1:
        raise RangeError(f"ratio: expected the fraction of missing pixels in [0, 1], got {ratio}")
    rng = np.random.default_rng(seed)
    return _as_mask(rng.random((h, w)) >= ratio)


def half_mask(size: int | tuple[int, int], side: str = "right") -> Tensor:
    """Half of the image missing.

    Args:
        size: image size ``(H, W)``.
        side: the missing half, ``"left"``, ``"right"``, ``"top"`` or ``"bottom"`` (``floor(W / 2)`` columns or
            ``floor(H / 2)`` rows).

    Returns:
        ``(1, 1, H, W)`` float32 mask.
    """
    h, w = image_size(size)
    observed = np.ones((h, w), dtype=np.float32)
    if side == "left":
        observed[:, : w // 2] = 0
    elif side == "right":
        observed[:, w - w // 2 :] = 0
    elif side == "top":
        observed[: h // 2] = 0
    elif side == "bottom":
        observed[h - h // 2 :] = 0
    else:
        raise ValueError(f"side: expected one of {', '.join(MASK_SIDES)}, got {side!r}")
    return _as_mask(observed)


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance from every pixel centre ``(yy, xx)`` to the segment ``p -> q`` (points as ``(x, y)``)."""
    d = q - p
    length2 = float(d @ d)  # a zero-length segment gives t = 0: the distance to the point
    t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(length2, 1e-300), 0.0, 1.0)
    return np.hypot(xx - p[0] - t * d[0], yy - p[1] - t * d[1])


def _brush_stroke(rng: np.random.Generator, h: int, w: int, shrink: float, grid: tuple) -> np.ndarray:
    """One DeepFill-v2 style brush stroke (zig-zag polyline with round joints), as a boolean hole map."""
    yy, xx = grid
    ref = min(h, w) / 256.0  # the protocol's constants are given for 256 x 256 images
    min_width, max_width = max(12 * ref, 1.5), max(40 * ref, 2.0)
    average_radius = math.hypot(h, w) / 8 * shrink
    mean_angle, angle_range = 2 * math.pi / 5, 2 * math.pi / 15
    num_vertex = int(rng.integers(4, 12))
    angle_min = mean_angle - rng.uniform(0, angle_range)
    angle_max = mean_angle + rng.uniform(0, angle_range)
    heading = rng.uniform(0, 2 * math.pi)  # DeepFill's zig-zags all run rightwards; turn each stroke at random
    vertices = [np.array([rng.uniform(0, w - 1), rng.uniform(0, h - 1)])]
    for i in range(num_vertex):
        angle = rng.uniform(angle_min, angle_max)
        if i % 2 == 0:
            angle = 2 * math.pi - angle
        angle += heading
        r = float(np.clip(rng.normal(average_radius, average_radius / 2), 0, 2 * average_radius))
        x = np.clip(vertices[-1][0] + r * math.cos(angle), 0, w - 1)
        y = np.clip(vertices[-1][1] + r * math.sin(angle), 0, h - 1)
        vertices.append(np.array([x, y]))
    width = max(rng.uniform(min_width, max_width) * shrink, 1.5)
    hole = np.zeros((h, w), dtype=bool)
    for p, q in itertools.pairwise(vertices):
        hole |= _segment_distance(yy, xx, p, q) <= width / 2
    return hole


def freeform_mask(
    size: int | tuple[int, int],
    hole_range: tuple[float, float] = (0.1, 0.5),
    seed: int = 0,
    max_tries: int = 10_000,
) -> Tensor:
    """Irregular holes made of random brush strokes (the free-form protocol of DeepFill v2 / partial convolutions).

    Each stroke is a zig-zag polyline of 4 to 11 vertices with random angles (turned by a random heading, so
    strokes run in every direction) and segment lengths (mean
    ``hypot(H, W) / 8``) and a random brush width (12 to 40 pixels at 256 x 256, scaled with the image), rasterised
    as thick segments with round joints (distance to segment, no OpenCV). One to three strokes are drawn, then more
    until the hole ratio reaches ``hole_range[0]``; a stroke that would push it above ``hole_range[1]`` is rejected
    and, after repeated rejections, strokes shrink (down to single pixels), so the result always lies inside
    ``hole_range``.

    Args:
        size: image size ``(H, W)``.
        hole_range: ``(low, high)`` bounds of the fraction of missing pixels.
        seed: seed of the strokes; the same ``(size, hole_range, seed)`` gives the same mask.
        max_tries: a safety cap on the number of strokes tried.

    Returns:
        ``(1, 1, H, W)`` float32 mask.
    """
    h, w = image_size(size)
    lo, hi = (float(v) for v in hole_range)
    if not 0 <= lo <= hi <= 1:
        raise RangeError(f"hole_range: expected 0 <= low <= high <= 1, got {tuple(hole_range)}")
    n = h * w
    need, cap = math.ceil(lo * n - 1e-9), math.floor(hi * n + 1e-9)
    if need > cap:
        raise RangeError(f"hole_range {tuple(hole_range)}: no hole count of an image of {h}x{w} pixels lies in it")
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    hole = np.zeros((h, w), dtype=bool)
    count, strokes, rejected, shrink = 0, 0, 0, 1.0
    min_strokes = int(rng.integers(1, 4))
    for _ in range(max_tries):
        if count >= need and strokes >= min_strokes:
            break
        if shrink < 0.05:  # near the budget: single pixels
            stroke = np.zeros((h, w), dtype=bool)
            stroke[rng.integers(0, h), rng.integers(0, w)] = True
        else:
            stroke = _brush_stroke(rng, h, w, shrink, grid)
        candidate = hole | stroke
        new_count = int(candidate.sum())
        if new_count <= cap:
            hole, count = candidate, new_count
            strokes += 1
        else:
            rejected += 1
            if rejected % 5 == 0:
                shrink *= 0.7
            if count >= need:  # the minimum is met and the next stroke does not fit: stop here
                break
    else:
        raise RuntimeError(f"freeform_mask: could not reach a hole ratio of {lo} in {max_tries} strokes")
    return _as_mask(~hole)


def load_mask(path: str | Path) -> Tensor:
    """Read a mask from an image file (PNG, JPEG, ...: white = observed) or a ``.npy`` array (1 = observed).

    Colour images are converted to grayscale; values are scaled to [0, 1] (``/255`` for 8-bit images, and for
    ``.npy`` arrays whose maximum exceeds 1) and thresholded at 0.5.

    Args:
        path: the file.

    Returns:
        ``(1, 1, H, W)`` float32 binary mask.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        from invgen.files import load_npy

        arr = load_npy(path, "mask").astype(np.float64)
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise ShapeError(f"mask file {path.name}: expected a 2-D array (H, W), got shape {arr.shape}")
        if arr.max(initial=0) > 1:
            arr = arr / 255.0
    else:
        from invgen.files import open_image

        with open_image(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    return _as_mask(arr >= 0.5)
