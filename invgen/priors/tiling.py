"""Apply an image-to-image network to large images in overlapping tiles, with bounded memory.

A fully convolutional prior's network sees a neighbourhood of each pixel; on a tile, the pixels near a tile edge that
is inside the image see padding instead of their true neighbours. :func:`tiled` therefore gives those pixels no
weight (a ``margin`` at interior edges), blends the rest of the overlap with linear ramps, and normalises by the
summed weights. For a network whose receptive field radius is at most ``margin``, the result equals the whole-image
call exactly; with global statistics (GroupNorm over a tile, attention) it is an approximation whose error should be
measured.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from invgen.errors import RangeError


def tile_starts(n: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` with stride ``step`` covering ``[0, n)``; the last one ends at ``n``."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, step))
    return [*starts, n - tile]


def _ramp(length: int, tile: int, margin: int, ramp: int, lead: bool, trail: bool, like: Tensor) -> Tensor:
    """1-D weights of a tile: 0 over ``margin`` and a linear ramp over ``ramp`` at interior (lead/trail) edges."""
    w = torch.ones(length, dtype=like.dtype, device=like.device)
    up = torch.arange(1, ramp + 1, dtype=like.dtype, device=like.device) / (ramp + 1)
    if lead:
        w[:margin] = 0
        w[margin : margin + ramp] = up
    if trail:
        w[length - margin :] = 0
        w[length - margin - ramp : length - margin] = up.flip(0)
    return w


def tiled(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int = 32, margin: int | None = None) -> Tensor:
    """``fn`` applied to ``x`` tile by tile.

    Args:
        fn: ``(B, C, h, w) -> (B, C', h, w)``, size-preserving, for ``h, w <= tile``.
        x: ``(B, C, H, W)``.
        tile: tile size (tiles are at most ``tile x tile``); images that fit are passed whole.
        overlap: overlap between neighbouring tiles, ``2 * margin < overlap < tile``.
        margin: pixels at interior tile edges given zero weight (default ``overlap // 4``).

    Returns:
        ``(B, C', H, W)``.
    """
    b, _, h, w = x.shape
    if h <= tile and w <= tile:
        return fn(x)
    margin = overlap // 4 if margin is None else margin
    if not (0 <= 2 * margin < overlap < tile):
        raise RangeError(
            f"tiled: expected 2 * margin < overlap < tile, got margin {margin}, overlap {overlap}, tile {tile}"
        )
    ramp = overlap - 2 * margin
    step = tile - overlap
    out: Tensor | None = None
    weight = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
    for i in tile_starts(h, tile, step):
        for j in tile_starts(w, tile, step):
            th, tw = min(tile, h), min(tile, w)
            y = fn(x[..., i : i + th, j : j + tw])
            if out is None:
                out = torch.zeros(b, y.shape[1], h, w, dtype=y.dtype, device=y.device)
            wi = _ramp(th, tile, margin, ramp, i > 0, i + th < h, x)
            wj = _ramp(tw, tile, margin, ramp, j > 0, j + tw < w, x)
            wt = wi[:, None] * wj[None, :]
            out[..., i : i + th, j : j + tw] += y * wt
            weight[..., i : i + th, j : j + tw] += wt
    return out / weight
