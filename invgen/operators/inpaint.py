"""Inpainting: ``y = mask * x`` with a box, random, free-form, half or user-given mask (1 = observed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invgen.checks import check_image
from invgen.errors import RangeError, ShapeError
from invgen.operators import masks as _masks
from invgen.operators.base import LinearOperator, match_batch
from invgen.operators.noise import NoiseModel

# mask type -> the keyword options it accepts (besides ``size``)
MASK_OPTIONS: dict[str, tuple[str, ...]] = {
    "box": ("box_size", "position", "seed"),
    "random": ("ratio", "seed"),
    "freeform": ("hole_range", "seed"),
    "half": ("side",),
}


def _user_mask(mask: Tensor) -> Tensor:
    """A user mask tensor as ``(1 or B, 1 or C, H, W)`` float with values in [0, 1]."""
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        if mask.shape[0] != 1:
            raise ShapeError(
                f"mask: a 3-D mask must be (1, H, W), got shape {tuple(mask.shape)} (use (B, C, H, W) for per-item "
                "or per-channel masks)"
            )
        mask = mask[None]
    elif mask.dim() != 4:
        raise ShapeError(f"mask: expected (H, W), (1, H, W) or (B, C, H, W), got shape {tuple(mask.shape)}")
    mask = mask.detach().to(torch.float32 if not mask.is_floating_point() else mask.dtype)
    if not bool(torch.isfinite(mask).all()) or bool((mask < 0).any()) or bool((mask > 1).any()):
        raise RangeError(
            f"mask: expected values in [0, 1] (1 = observed), got values in [{float(mask.min()):.4g}, "
            f"{float(mask.max()):.4g}]"
        )
    return mask


class Inpaint(LinearOperator):
    """``A(x) = mask * x``: missing pixels are zeroed (mask 1 = observed, 0 = hole).

    The mask broadcasts over channels (shape ``(1, 1, H, W)``) unless given per channel, and over the batch unless
    given per item (``(B, ...)``, repeated for a batch of ``k * B``). A generated mask without ``size`` is drawn for
    the size of the first input and cached per size, deterministically from ``seed``. Soft masks (values in
    [0, 1]) are allowed: the operator is then a diagonal weighting.

    Args:
        mask: ``"box"``, ``"random"``, ``"freeform"``, ``"half"`` (see :mod:`invgen.operators.masks`), a mask
            tensor ``(H, W)``, ``(1, H, W)`` or ``(B or 1, C or 1, H, W)``, or a file path (PNG/JPEG: white =
            observed; ``.npy``: 1 = observed; thresholded at 0.5).
        size: ``(H, W)`` of a generated mask; default: the size of the first input.
        seed: seed of the ``box`` (``position="random"``), ``random`` and ``freeform`` masks (default 0).
        box_size: ``box`` only: int or ``(h, w)`` pixels, or float fraction(s) of the sides (default 0.5).
        position: ``box`` only: ``"center"`` (default) or ``"random"``.
        ratio: ``random`` only: fraction of pixels missing (default 0.7).
        hole_range: ``freeform`` only: bounds of the hole ratio (default ``(0.1, 0.5)``).
        side: ``half`` only: the missing half, ``"left"``, ``"right"`` (default), ``"top"`` or ``"bottom"``.
        noise: the observation noise model.

    Shape:
        x, y: ``(B, C, H, W)``; spectral coordinates are the image itself (U = V = I) with singular values
        ``mask`` (broadcast to the image).

    Example:
        >>> op = Inpaint("random", ratio=0.5, seed=0)
        >>> y = op(torch.rand(1, 3, 8, 8))
        >>> op.mask.shape
        torch.Size([1, 1, 8, 8])
    """

    name = "inpaint"
    has_svd = True

    def __init__(
        self,
        mask: str | Path | Tensor = "box",
        *,
        size: tuple[int, int] | None = None,
        seed: int | None = None,
        box_size: Any = None,
        position: str | None = None,
        ratio: float | None = None,
        hole_range: tuple[float, float] | None = None,
        side: str | None = None,
        noise: NoiseModel | None = None,
    ) -> None:
        super().__init__(noise)
        options = {
            "seed": seed,
            "box_size": box_size,
            "position": position,
            "ratio": ratio,
            "hole_range": hole_range,
            "side": side,
        }
        given = {k: v for k, v in options.items() if v is not None}
        self._kind: str | None = None
        self._fixed: Tensor | None = None
        self._options: dict[str, Any] = {}
        self._size = _masks.image_size(size) if size is not None else None
        self._cache: dict[tuple[int, int], Tensor] = {}
        self._last: tuple[int, int] | None = None
        if isinstance(mask, Tensor):
            self._fixed = _user_mask(mask)
            kind = "tensor"
        elif isinstance(mask, str) and mask in MASK_OPTIONS:
            kind = self._kind = mask
            self._options = given
        elif isinstance(mask, (str, Path)):
            if not Path(mask).is_file():
                raise FileNotFoundError(
                    f"inpaint: mask {str(mask)!r} is neither a mask type ({', '.join(MASK_OPTIONS)}) nor an existing "
                    "file"
                )
            self._fixed = _masks.load_mask(mask)
            kind = "file"
        else:
            raise TypeError(f"inpaint: mask must be a mask type name, a tensor or a file path, got {type(mask)}")
        allowed = MASK_OPTIONS.get(self._kind or "", ())
        extra = sorted(set(given) - set(allowed))
        if extra:
            hint = (
                f"mask={mask!r} accepts {', '.join(allowed) or 'no options'}"
                if self._kind
                else ("a given mask accepts no generator options")
            )
            raise TypeError(f"inpaint: option(s) {', '.join(extra)} do not apply ({hint})")
        if self._fixed is not None and size is not None and tuple(self._fixed.shape[-2:]) != self._size:
            raise ShapeError(f"inpaint: size={self._size} but the given mask has size {tuple(self._fixed.shape[-2:])}")
        if kind in ("tensor", "file") and size is None:
            self._size = tuple(self._fixed.shape[-2:])
        self._config = {"mask": mask, **given}
        if size is not None:
            self._config["size"] = self._size
        if self._kind is not None and self._size is not None:
            self._generate(self._size)

    # -- the mask -----------------------------------------------------------------------------------------------
    def _generate(self, size: tuple[int, int]) -> Tensor:
        if size not in self._cache:
            o = self._options
            if self._kind == "box":
                m = _masks.box_mask(size, o.get("box_size"), o.get("position", "center"), o.get("seed", 0))
            elif self._kind == "random":
                m = _masks.random_mask(size, o.get("ratio", 0.7), o.get("seed", 0))
            elif self._kind == "freeform":
                m = _masks.freeform_mask(size, o.get("hole_range", (0.1, 0.5)), o.get("seed", 0))
            else:
                m = _masks.half_mask(size, o.get("side", "right"))
            self._cache[size] = m
        self._last = size
        return self._cache[size]

    def mask_for(self, x_shape: tuple[int, ...]) -> Tensor:
        """The mask used for inputs of shape ``x_shape`` ``(B, C, H, W)`` (generated and cached if needed).

        Returns:
            ``(1 or B, 1 or C, H, W)`` tensor on the CPU (operators move it to the input's device and dtype).
        """
        if len(x_shape) != 4:
            raise ShapeError(f"inpaint: expected an input shape (B, C, H, W), got {tuple(x_shape)}")
        size = (int(x_shape[-2]), int(x_shape[-1]))
        if self._size is not None and size != self._size:
            raise ShapeError(
                f"inpaint: the mask has size {self._size[0]}x{self._size[1]} but the image has size {size[0]}x{size[1]}"
            )
        m = self._fixed if self._fixed is not None else self._generate(size)
        c = int(x_shape[1])
        if m.shape[1] not in (1, c):
            raise ShapeError(f"inpaint: the mask has {m.shape[1]} channels but the image has {c}")
        return m

    @property
    def mask(self) -> Tensor:
        """The mask ``(1 or B, 1 or C, H, W)``, once its size is known (given, or set by the last input)."""
        if self._fixed is not None:
            return self._fixed
        size = self._size or self._last
        if size is None:
            raise ShapeError("inpaint: the mask size is not known yet; pass size=(H, W) or apply the operator first")
        return self._generate(size)

    def _mask(self, x: Tensor) -> Tensor:
        return match_batch(self.mask_for(tuple(x.shape)), x)

    # -- the operator -------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        check_image(x, "x")
        return x * self._mask(x)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        check_image(y, "y")
        return y * self._mask(y)

    def pinv(self, y: Tensor) -> Tensor:
        check_image(y, "y")
        m = self._mask(y)
        observed = m > 0
        return y * torch.where(observed, m, torch.ones_like(m)).reciprocal() * observed

    def svd_vt(self, x: Tensor) -> Tensor:
        return x

    def svd_v(self, z: Tensor) -> Tensor:
        return z

    def svd_ut(self, y: Tensor) -> Tensor:
        return y * (self._mask(y) > 0)

    def svd_u(self, z: Tensor) -> Tensor:
        return z * (self._mask(z) > 0)

    def singulars(self, z: Tensor) -> Tensor:
        return self._mask(z).expand(z.shape)
