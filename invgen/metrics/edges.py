"""Edge agreement with a binary sketch: the symmetric edge F1 and the symmetric chamfer distance.

Both compare the Canny edges of each image (:func:`invgen.operators.sketch.make_sketch`, the same edges that make a
sketch) with a **binary** sketch of thin lines: the drawing, or ``make_sketch`` of the ground truth. They refuse
the soft edge map that the ``sketch`` operator observes: thresholded at 0.5 that map is a band about the strokes
(twice the pixels of the Canny lines), against which no threshold parts right from wrong digits once the right one is
drawn with thicker strokes (``tests/test_edge_metrics.py``, ``docs/metrics.md``).

- :func:`edge_f1`: F1 of precision (sample edges within ``tolerance`` px of a sketch edge) and recall (sketch edges
  within ``tolerance`` px of a sample edge); in [0, 1], higher is better.
- :func:`edge_chamfer`: the mean Euclidean distance in pixels from each edge pixel to the nearest edge pixel of the
  other map, averaged over both directions; 0 for identical maps, lower is better.

The registered metrics ``edge_f1`` and ``edge_chamfer`` (``fn(x, reference) -> (B,)``, as the benchmark runner and
``invgen.tasks.solve_image(metrics=...)`` call them) take a clean reference *image* and compare with its sketch:
:func:`sketch_f1` and :func:`sketch_chamfer`.

Example:
    >>> import torch
    >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
    >>> from invgen.operators.sketch import make_sketch
    >>> float(edge_f1(x, make_sketch(x))[0]), float(edge_chamfer(x, make_sketch(x))[0])
    (1.0, 0.0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.checks import check_image
from invgen.errors import RangeError, ShapeError


def _edges_and_sketch(x: Tensor, sketch: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """The Canny edges of ``x`` and the sketch as boolean ``(B, 1, H, W)`` maps, checked."""
    from invgen.operators.sketch import make_sketch

    check_image(x, "x", channels=(1, 3), clean=True)
    if sketch.dim() != 4 or sketch.shape[1] != 1 or sketch.shape[0] not in (1, x.shape[0]):
        raise ShapeError(
            f"{name}: expected sketch of shape (B or 1, 1, H, W) with B = {x.shape[0]}, got {tuple(sketch.shape)}"
        )
    if tuple(sketch.shape[-2:]) != tuple(x.shape[-2:]):
        raise ShapeError(f"{name}: sketch is {tuple(sketch.shape[-2:])}, the images are {tuple(x.shape[-2:])}")
    if not bool(((sketch == 0) | (sketch == 1)).all()):
        raise RangeError(
            f"{name}: expected a binary sketch (values 0 and 1, e.g. make_sketch(truth) or a drawing thresholded "
            f"with (drawing > 0.5).float()), got values in [{float(sketch.min()):.3g}, {float(sketch.max()):.3g}]"
        )
    edges = make_sketch(x) > 0.5
    return edges, (sketch > 0.5).to(edges.device).expand(edges.shape[0], -1, -1, -1)


def edge_f1(x: Tensor, sketch: Tensor, tolerance: int = 1) -> Tensor:
    """Symmetric edge F1 between the Canny edges of each image and a binary sketch.

    Precision is the fraction of ``x``'s edge pixels within ``tolerance`` px (Chebyshev distance, a
    ``2 tolerance + 1`` square) of a sketch pixel; recall the fraction of sketch pixels within ``tolerance`` of an edge
    pixel of ``x``. An empty edge map (or sketch) gives precision (recall) 0, so F1 0, unless both are empty: then
    there is nothing to disagree on and F1 is 1.

    Args:
        x: images in [0, 1] (samples are clamped by the caller).
        sketch: the binary sketch, values in {0, 1} (1 = edge line): ``make_sketch(truth)`` or a thresholded drawing.
        tolerance: the match radius in pixels (0: exact pixel matches).

    Returns:
        ``(B,)`` F1 in [0, 1], higher is better.

    Shape:
        x: ``(B, 1 or 3, H, W)``; sketch: ``(B or 1, 1, H, W)``.

    Example:
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
        >>> from invgen.operators.sketch import make_sketch
        >>> float(edge_f1(torch.roll(x, 1, dims=-1), make_sketch(x), tolerance=1)[0])
        1.0
    """
    if int(tolerance) != tolerance or tolerance < 0:
        raise RangeError(f"edge_f1: expected an integer tolerance >= 0, got {tolerance!r}")
    edges, ref = _edges_and_sketch(x, sketch, "edge_f1")
    r = int(tolerance)

    def dilate(m: Tensor) -> Tensor:
        return F.max_pool2d(m.float(), 2 * r + 1, stride=1, padding=r) > 0.5 if r > 0 else m

    tp_p = (edges & dilate(ref)).flatten(1).sum(1).double()
    tp_r = (ref & dilate(edges)).flatten(1).sum(1).double()
    n_e = edges.flatten(1).sum(1).double()
    n_r = ref.flatten(1).sum(1).double()
    precision = tp_p / n_e.clamp_min(1)
    recall = tp_r / n_r.clamp_min(1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    return torch.where((n_e == 0) & (n_r == 0), 1.0, f1).to(x.dtype)


def _distance_to(mask: Tensor) -> Tensor:
    """Euclidean distance of every pixel to the nearest True pixel of ``mask`` (``(H, W)`` bool, not empty)."""
    from scipy.ndimage import distance_transform_edt

    return torch.from_numpy(distance_transform_edt(~mask.cpu().numpy()))


def edge_chamfer(x: Tensor, sketch: Tensor) -> Tensor:
    """Symmetric chamfer distance in pixels between the Canny edges of each image and a binary sketch.

    ``(mean over x's edge pixels of the distance to the nearest sketch pixel + mean over sketch pixels of the
    distance to the nearest edge pixel of x) / 2``, Euclidean distances from an exact distance transform
    (``scipy.ndimage.distance_transform_edt``). Unlike the F1 it has no match radius: it grows with how far off the
    edges are. Empty maps: both empty gives 0; exactly one empty gives the image diagonal ``sqrt(H^2 + W^2)``, more
    than any distance inside the image (the missing edges count as infinitely far, capped).

    Args:
        x: images in [0, 1] (samples are clamped by the caller).
        sketch: the binary sketch, values in {0, 1}: ``make_sketch(truth)`` or a thresholded drawing.

    Returns:
        ``(B,)`` distances in pixels, ``>= 0``, lower is better.

    Shape:
        x: ``(B, 1 or 3, H, W)``; sketch: ``(B or 1, 1, H, W)``.

    Example:
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
        >>> from invgen.operators.sketch import make_sketch
        >>> float(edge_chamfer(torch.roll(x, 2, dims=-1), make_sketch(x))[0]) > 0
        True
    """
    edges, ref = _edges_and_sketch(x, sketch, "edge_chamfer")
    h, w = edges.shape[-2:]
    diagonal = math.hypot(h, w)
    out = torch.empty(edges.shape[0], dtype=torch.float64)
    for b in range(edges.shape[0]):
        e, s = edges[b, 0].cpu(), ref[b, 0].cpu()
        if not e.any() and not s.any():
            out[b] = 0.0
        elif not e.any() or not s.any():
            out[b] = diagonal
        else:
            out[b] = 0.5 * (_distance_to(s)[e].mean() + _distance_to(e)[s].mean())
    return out.to(device=x.device, dtype=x.dtype)


def _reference_sketch(x: Tensor, reference: Tensor, name: str) -> Tensor:
    from invgen.metrics.psnr import check_pair
    from invgen.operators.sketch import make_sketch

    check_pair(x, reference, "x", "reference", who=name)
    return make_sketch(reference)


def sketch_f1(x: Tensor, reference: Tensor, tolerance: int = 1) -> Tensor:
    """:func:`edge_f1` of ``x`` against the Canny sketch of a clean reference image (``make_sketch(reference)``).

    The registered metric ``edge_f1``: it takes images on both sides, like PSNR.

    Shape:
        x, reference: ``(B, C, H, W)`` in [0, 1]. Returns ``(B,)``.
    """
    return edge_f1(x, _reference_sketch(x, reference, "edge_f1"), tolerance=tolerance)


def sketch_chamfer(x: Tensor, reference: Tensor) -> Tensor:
    """:func:`edge_chamfer` of ``x`` against the Canny sketch of a clean reference image (``make_sketch(reference)``).

    The registered metric ``edge_chamfer``: it takes images on both sides, like PSNR.

    Shape:
        x, reference: ``(B, C, H, W)`` in [0, 1]. Returns ``(B,)``.
    """
    return edge_chamfer(x, _reference_sketch(x, reference, "edge_chamfer"))
