"""Datasets as lazy collections of images addressed by stable string ids, and their views.

A :class:`Dataset` holds N clean images, each a float32 tensor ``(C, H, W)`` in [0, 1], addressed by position
``i`` (0 .. N-1) and by a stable string id (``"00042"`` for the index of an MNIST/CIFAR image in its split, the file
stem for an image folder). Images are read on demand. ``select`` and ``transform`` return views (nothing is copied)
whose ``config()`` records how to rebuild them, so a benchmark row can name exactly the image it used::

    ds = invgen.dataset("bsd68").select(count=4).transform(crop=256)
    cfg = ds.config()  # {"name": "bsd68", "options": {...}, "selection": [...], "transform": [{...}]}
    same = from_config(cfg)

Registered datasets come from the ``register_datasets`` hook (see :mod:`invgen.data.sets` for the built-in ones).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.errors import InvgenError, ShapeError
from invgen.operators.color import LUMA_601


class UnknownIdError(InvgenError, KeyError):
    """An image id that the dataset does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message like a key
        return str(self.args[0]) if self.args else ""


def _few(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:n])
    return f"{shown}, ... ({len(ids)} in all)" if len(ids) > n else shown


def _size_pair(value: Any, what: str) -> tuple[int, int] | None:
    """``None``, an int ``s`` (read as ``(s, s)``) or a pair ``(h, w)`` of positive ints -> ``(h, w)`` or None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what}: expected a positive int or a pair (h, w) of positive ints, got {value!r}")


class Dataset:
    """N images ``(C, H, W)`` float32 in [0, 1], read on demand, each with a stable string id.

    Subclasses implement ``_load(i)`` for a valid position ``i``; views (:meth:`select`, :meth:`transform`) wrap a
    parent. ``len(ds)``, ``ds[i]`` and iteration work, so a dataset can feed a ``torch.utils.data.DataLoader``.

    Attributes:
        name: the registered name (``"mnist"``, ``"bsd68"``, ``"folder"``, ...), the key to rebuild it.
        ids: the image ids in order, unique strings.
        channels: C, the same for every image (1 gray or 3 RGB).
        description: one line saying what the images are.

    Shape:
        ``image(i)``: ``(C, H, W)``; ``shape`` is that ``(C, H, W)`` when all images share it, else None.
    """

    def __init__(
        self,
        name: str,
        ids: Sequence[str],
        *,
        channels: int,
        shape: tuple[int, int, int] | None = None,
        description: str = "",
        options: dict[str, Any] | None = None,
        index_ids: bool = False,
    ) -> None:
        self.name = name
        self.ids = [str(i) for i in ids]
        self.channels = int(channels)
        self.description = description
        self._shape = tuple(shape) if shape is not None else None
        self._options = dict(options or {})
        self._index_ids = index_ids  # ids are zero-padded indices: select() also takes ints
        self._position = {i: k for k, i in enumerate(self.ids)}
        if len(self._position) != len(self.ids):
            dup = next(i for i, n in Counter(self.ids).items() if n > 1)
            raise InvgenError(f"dataset {name!r}: image ids must be unique, got {dup!r} more than once")

    # --- reading -------------------------------------------------------------------------------------------------
    def _load(self, i: int) -> Tensor:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` shared by every image, or None when sizes vary."""
        return self._shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.ids)

    def _check_position(self, i: int) -> int:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"{self.name}: expected an integer position, got {type(i).__name__} {i!r}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: position {i} out of range for {n} images (0 .. {n - 1})")
        return i % n

    def image(self, i: int) -> Tensor:
        """The image at position ``i`` (negative counts from the end), float32 ``(C, H, W)`` in [0, 1]."""
        return self._load(self._check_position(i))

    def images(self, indices: Iterable[int] | None = None) -> list[Tensor]:
        """The images at the given positions (all when None), each ``(C, H, W)``."""
        return [self.image(i) for i in (range(len(self)) if indices is None else indices)]

    def __getitem__(self, i: int) -> Tensor:
        return self.image(i)

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self.image(i)

    def index(self, image_id: str | int) -> int:
        """The position of an image id (an int is accepted for index ids: ``3`` means ``"00003"``)."""
        key = self._normalize_id(image_id)
        if key not in self._position:
            raise UnknownIdError(
                f"{self.name}: unknown image id {image_id!r}; expected one of {_few(self.ids)}"
            ) from None
        return self._position[key]

    def _normalize_id(self, image_id: str | int) -> str:
        if isinstance(image_id, str):
            return image_id
        if isinstance(image_id, int) and not isinstance(image_id, bool):
            if not self._index_ids:
                raise TypeError(
                    f"{self.name}: image ids are file names (strings such as {_few(self.ids, 3)}), got the int "
                    f"{image_id}; pass positions to image(i) or ids as strings"
                )
            width = len(self.ids[0]) if self.ids else 5
            return f"{image_id:0{width}d}"
        raise TypeError(f"{self.name}: an image id is a string (or an int for index ids), got {image_id!r}")

    # --- views ---------------------------------------------------------------------------------------------------
    def select(self, ids: Iterable[str | int] | None = None, count: int | None = None, start: int = 0) -> Dataset:
        """A view on some images: explicit ``ids`` (in that order), or ``count`` images from position ``start``.

        Args:
            ids: image ids (strings; ints for index ids such as MNIST's, ``42`` meaning ``"00042"``); no repeats.
            count: how many consecutive images to take (None: all from ``start`` on).
            start: the first position when selecting by count.

        Raises:
            ValueError: both ``ids`` and ``count``/``start`` given, a repeated id, or a range past the end.
            UnknownIdError: an unknown id (a ``KeyError``; the message lists valid ones).
        """
        if ids is not None:
            if count is not None or start != 0:
                raise ValueError(
                    f"{self.name}.select: give either ids or count/start, not both (got ids and "
                    f"count={count!r}, start={start!r})"
                )
            if isinstance(ids, (str, int)):
                raise TypeError(f"{self.name}.select: ids must be a list of ids, got the single value {ids!r}")
            positions = [self.index(i) for i in ids]
            if len(set(positions)) != len(positions):
                dup = next(self.ids[p] for k, p in enumerate(positions) if p in positions[:k])
                raise ValueError(f"{self.name}.select: id {dup!r} is selected twice")
            return _Selection(self, positions)
        n = len(self)
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= n:
            raise ValueError(f"{self.name}.select: start must be an int in [0, {n}], got {start!r}")
        if count is None:
            count = n - start
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"{self.name}.select: count must be a non-negative int, got {count!r}")
        if start + count > n:
            raise ValueError(f"{self.name}.select: start={start} + count={count} runs past the end ({n} images)")
        return _Selection(self, list(range(start, start + count)))

    def transform(
        self,
        crop: int | tuple[int, int] | None = None,
        resize: int | tuple[int, int] | None = None,
        gray: bool = False,
        rgb: bool = False,
        modcrop: int | None = None,
    ) -> Dataset:
        """A view whose images are mod-cropped, centre-cropped, then resized, then made gray and/or RGB.

        Args:
            modcrop: ``k``: drop the last rows and columns so H and W are multiples of ``k`` (the super-resolution
                convention, ``x[:, :H - H % k, :W - W % k]``), before anything else.
            crop: ``s`` or ``(h, w)``: the centre ``h x w`` window (``s x s``); larger than an image is an error.
            resize: ``s`` or ``(h, w)``: antialiased bicubic resize to ``h x w`` (``s x s``), clamped to [0, 1].
            gray: replace RGB by its ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` (C=3 -> 1; gray stays gray).
            rgb: repeat a gray channel three times (C=1 -> 3; RGB stays RGB). With ``gray`` too: gray, then RGB.

        Shape:
            ``(C, H, W)`` -> ``(C', h, w)``, C' = 1 with ``gray`` alone, 3 with ``rgb``, else C.
        """
        if not isinstance(gray, bool) or not isinstance(rgb, bool):
            raise TypeError(f"transform: gray and rgb must be bools, got gray={gray!r}, rgb={rgb!r}")
        step = {"crop": _size_pair(crop, "crop"), "resize": _size_pair(resize, "resize"), "gray": gray, "rgb": rgb}
        if modcrop is not None:
            if isinstance(modcrop, bool) or not isinstance(modcrop, int) or modcrop < 1:
                raise ValueError(f"transform: modcrop must be an integer >= 1, got {modcrop!r}")
            step["modcrop"] = modcrop
        return _Transformed(self, step)

    # --- configuration -------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What rebuilds this dataset (JSON-serialisable): ``{"name", "options", "selection", "transform"}``.

        ``options`` are the factory's keyword arguments (without ``verify``, which checks the data but does not
        change them; a rebuild verifies by default), ``selection`` the ids in order (None: all), ``transform``
        the list of :meth:`transform` steps applied after the selection. :func:`from_config` rebuilds the view.
        """
        return {"name": self.name, "options": dict(self._options), "selection": None, "transform": []}

    def __repr__(self) -> str:
        shape = self.shape if self.shape is not None else f"({self.channels}, varying H, W)"
        return f"<{type(self).__name__} {self.name!r}: {len(self)} images {shape}>"


class _Selection(Dataset):
    """Some images of a parent dataset, by parent position."""

    def __init__(self, parent: Dataset, positions: list[int]) -> None:
        super().__init__(
            parent.name,
            [parent.ids[p] for p in positions],
            channels=parent.channels,
            shape=parent.shape,
            description=parent.description,
            index_ids=parent._index_ids,
        )
        self._parent = parent
        self._positions = positions

    def _load(self, i: int) -> Tensor:
        return self._parent.image(self._positions[i])

    def config(self) -> dict[str, Any]:
        cfg = self._parent.config()
        cfg["selection"] = list(self.ids)  # transforms act per image, so the selection can always go first
        return cfg


class _Transformed(Dataset):
    """A parent dataset through crop -> resize -> gray/rgb."""

    def __init__(self, parent: Dataset, step: dict[str, Any]) -> None:
        channels = parent.channels
        if step["gray"]:
            channels = 1
        if step["rgb"]:
            channels = 3
        size = None
        if parent.shape is not None:
            size = tuple(parent.shape[1:])
            k = step.get("modcrop") or 1
            size = (size[0] - size[0] % k, size[1] - size[1] % k)
            if step["crop"] is not None:
                _check_crop(step["crop"], size, f"{parent.name} (every image is {size[0]}x{size[1]})")
        if step["crop"] is not None:
            size = step["crop"]
        if step["resize"] is not None:
            size = step["resize"]
        super().__init__(
            parent.name,
            parent.ids,
            channels=channels,
            shape=(channels, *size) if size is not None else None,
            description=parent.description,
            index_ids=parent._index_ids,
        )
        self._parent = parent
        self._step = step

    def _load(self, i: int) -> Tensor:
        return apply_transform(self._parent.image(i), **self._step, what=f"{self.name} image {self.ids[i]!r}")

    def config(self) -> dict[str, Any]:
        cfg = self._parent.config()
        step = {k: list(v) if isinstance(v, tuple) else v for k, v in self._step.items()}
        cfg["transform"] = [*cfg["transform"], step]
        return cfg


def _check_crop(crop: tuple[int, int], size: tuple[int, ...], what: str) -> None:
    if crop[0] > size[0] or crop[1] > size[1]:
        raise ShapeError(f"crop {crop[0]}x{crop[1]} is larger than {what}: expected a crop within {size[0]}x{size[1]}")


def apply_transform(
    x: Tensor,
    crop: tuple[int, int] | None = None,
    resize: tuple[int, int] | None = None,
    gray: bool = False,
    rgb: bool = False,
    modcrop: int | None = None,
    what: str = "image",
) -> Tensor:
    """Mod-crop, centre crop, antialiased bicubic resize (clamped to [0, 1]), ITU-R 601 luma, gray -> RGB, in order.

    Shape:
        x: ``(C, H, W)`` with C = 1 or 3 -> ``(C', h, w)``.
    """
    if modcrop:
        h, w = x.shape[-2:]
        x = x[:, : h - h % modcrop, : w - w % modcrop]
    if crop is not None:
        h, w = x.shape[-2:]
        _check_crop(crop, (h, w), f"{what} ({h}x{w})")
        top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
        x = x[:, top : top + crop[0], left : left + crop[1]]
    if resize is not None and tuple(x.shape[-2:]) != tuple(resize):
        x = F.interpolate(x[None], size=resize, mode="bicubic", align_corners=False, antialias=True)[0]
        x = x.clamp_(0.0, 1.0)
    if gray and x.shape[0] == 3:
        weights = torch.tensor(LUMA_601, dtype=x.dtype, device=x.device).reshape(3, 1, 1)
        x = (x * weights).sum(dim=0, keepdim=True)
    if rgb and x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.contiguous()


def from_config(config: dict[str, Any]) -> Dataset:
    """Rebuild a dataset view from :meth:`Dataset.config` (also after a JSON round trip)."""
    from invgen import registry

    missing = {"name", "options"} - set(config)
    if missing:
        raise ValueError(
            f"dataset config: expected keys name, options[, selection, transform], missing {sorted(missing)}"
        )
    ds: Dataset = registry.get("datasets", config["name"]).create(**config["options"])
    if config.get("selection") is not None:
        ds = ds.select(ids=config["selection"])
    for step in config.get("transform") or []:
        ds = ds.transform(**step)
    return ds
