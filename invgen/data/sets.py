"""The registered datasets: MNIST, Fashion-MNIST, CIFAR-10, the classic restoration test sets and any image folder.

Every factory returns a :class:`~invgen.data.base.Dataset` of float32 ``(C, H, W)`` images in [0, 1], read lazily
from the data root (``root=``, else ``INVGEN_DATA``). With ``verify=True`` (the default for the registered sets)
every file the dataset reads is checked against the SHA-256 shipped in ``checksums.json`` first (cached, see
:mod:`invgen.data.verify`).

Example:
    >>> ds = invgen.dataset("set12")  # 12 gray test images
    >>> ds.ids[:3], ds.image(0).shape
    (['01', '02', '03'], torch.Size([1, 256, 256]))
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from invgen.data.base import Dataset
from invgen.data.datasets import DataNotFoundError, data_root, decode_jpeg, load_idx, read_cifar10_jpegs
from invgen.data.verify import check_files, manifest_files, read_sha256sums
from invgen.errors import InvgenError
from invgen.operators.color import LUMA_601

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass(frozen=True)
class Spec:
    """What a registered dataset is: its description, fixed shape (None when sizes vary), the files it reads
    (glob patterns relative to the data root; ``make_checksums`` selects the manifest's entries with them) and its
    channel count."""

    description: str
    shape: tuple[int, int, int] | None
    files: tuple[str, ...]
    channels: int


# invgen/builtin.py registers the same names, descriptions, shapes and files (tests/test_datasets.py checks it).
SPECS: dict[str, Spec] = {
    "mnist": Spec(
        "MNIST digits (test 10000 / train 60000), 28x28 padded by 2 to 1x32x32; ids are split indices '00000'...",
        (1, 32, 32),
        ("mnist/*-idx?-ubyte.gz",),
        1,
    ),
    "fashion-mnist": Spec(
        "Fashion-MNIST (test 10000 / train 60000), 28x28 padded by 2 to 1x32x32; ids are split indices '00000'...",
        (1, 32, 32),
        ("fashion-mnist/*-idx?-ubyte.gz",),
        1,
    ),
    "cifar10": Spec(
        "CIFAR-10 (test 10000 / train 50000) from the JPEG archive (quality ~75, lossy), 3x32x32, ordered by "
        "(class, file); ids are split indices '00000'...",
        (3, 32, 32),
        ("cifar10/cifar10_jpg.tar.gz",),
        3,
    ),
    "set5": Spec(
        "Set5 super-resolution test set: the 5 HR ground-truth images of eval/Set5/HR (LR_bicubic/ is not read), "
        "RGB, 228x344 to 512x512",
        None,
        ("eval/Set5/HR/*.png",),
        3,
    ),
    "set14": Spec(
        "Set14 (the colour CSet14 files): 14 test images, RGB (the gray 'bridge' repeated to 3 channels), "
        "250x361 to 720x576",
        None,
        ("eval/Set14/*.png",),
        3,
    ),
    "set12": Spec(
        "Set12 denoising test set (DnCNN): 12 gray images, 7 at 256x256 and 5 at 512x512",
        None,
        ("eval/Set12/*.png",),
        1,
    ),
    "bsd68": Spec(
        "BSD68 denoising test set (DnCNN): 68 gray clean images, 321x481 or 481x321",
        None,
        ("eval/BSD68/*.png",),
        1,
    ),
    "cbsd68": Spec(
        "CBSD68 (FFDNet): the 68 BSD68 clean images in colour, RGB 321x481 or 481x321",
        None,
        ("eval/CBSD68/*.png",),
        3,
    ),
    "kodak24": Spec(
        "Kodak24 (FFDNet test set): the 24 Kodak photos as 500x500 RGB crops",
        (3, 500, 500),
        ("eval/Kodak24/*.png",),
        3,
    ),
    "ffhq256-100": Spec(
        "100 FFHQ face photos 256x256 RGB (the DAPS demo subset; FFHQ licence BY-NC-SA)",
        (3, 256, 256),
        ("eval/FFHQ256_100/*.png",),
        3,
    ),
}

FOLDER_DESCRIPTION = (
    "any folder of PNG/JPEG images: folder(path, recursive=False, verify=False); sorted by file name, ids are the "
    "file stems"
)


def _options(root: str | os.PathLike | None, **more: Any) -> dict[str, Any]:
    """The factory options a config records. ``verify`` is left out: it checks the data but does not change them,
    so a config (and whatever is keyed on it) is the same with or without it; a rebuild verifies by default."""
    return {**more, "root": str(root) if root is not None else None}


def _index_ids(n: int) -> list[str]:
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{k:0{width}d}" for k in range(n)]


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


# --- MNIST / Fashion-MNIST --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _idx_array(path: str, size: int, mtime_ns: int) -> np.ndarray:
    return load_idx(path)


def _idx_count(path: Path) -> int:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        head = f.read(8)
    return struct.unpack(">I", head[4:8])[0]


class IdxDataset(Dataset):
    """MNIST-style IDX images ``(N, 28, 28)`` uint8, padded by 2 to ``(1, 32, 32)``; the array is read once.

    Shape:
        ``image(i)``: ``(1, 32, 32)``, equal to ``invgen.data.mnist(split)[0][i]``.
    """

    def __init__(self, name: str, split: str, root: str | os.PathLike | None, verify: bool) -> None:
        _check_split(name, split)
        base = data_root(root)
        prefix = "train" if split == "train" else "t10k"
        files = {rel: h for rel, h in manifest_files(name).items() if Path(rel).name.startswith(prefix + "-")}
        check_files(base, files, name, verify)
        self.path = base / next(rel for rel in files if "-images-" in rel)
        self.labels_path = base / next(rel for rel in files if "-labels-" in rel)
        self.split = split
        n = _idx_count(self.path)
        spec = SPECS[name]
        super().__init__(
            name,
            _index_ids(n),
            channels=1,
            shape=spec.shape,
            description=spec.description,
            options=_options(root, split=split),
            index_ids=True,
        )

    def label(self, i: int) -> int:
        """The class index (0 .. 9) of the image at position ``i``."""
        return int(_idx_array(*_stat_key(self.labels_path))[self._check_position(i)])

    def _load(self, i: int) -> Tensor:
        array = _idx_array(*_stat_key(self.path))
        x = torch.from_numpy(array[i].copy()).unsqueeze(0).float().div_(255.0)
        return F.pad(x, (2, 2, 2, 2))


def mnist(split: str = "test", root: str | os.PathLike | None = None, verify: bool = True) -> IdxDataset:
    """MNIST digits of a split (test: 10000, train: 60000), each ``(1, 32, 32)``; ids ``"00000"``, ``"00001"``..."""
    return IdxDataset("mnist", split, root, verify)


def fashion_mnist(split: str = "test", root: str | os.PathLike | None = None, verify: bool = True) -> IdxDataset:
    """Fashion-MNIST of a split (test: 10000, train: 60000), each ``(1, 32, 32)``; ids ``"00000"``..."""
    return IdxDataset("fashion-mnist", split, root, verify)


# --- CIFAR-10 ---------------------------------------------------------------------------------------------------
CIFAR10_SIZES = {"train": 50000, "test": 10000}


@functools.lru_cache(maxsize=2)
def _cifar_jpegs(path: str, split: str, size: int, mtime_ns: int) -> tuple[list[bytes], np.ndarray]:
    return read_cifar10_jpegs(path, split)


class Cifar10Dataset(Dataset):
    """CIFAR-10 from the JPEG archive: the split's JPEG files are read once, on first access (about 3 s to scan the
    archive), and each image is decoded when asked for.

    Shape:
        ``image(i)``: ``(3, 32, 32)``, equal to ``invgen.data.cifar10(split)[0][i]``.
    """

    def __init__(self, split: str, root: str | os.PathLike | None, verify: bool) -> None:
        _check_split("cifar10", split)
        base = data_root(root)
        files = manifest_files("cifar10")
        check_files(base, files, "cifar10", verify)
        self.path = base / next(iter(files))
        self.split = split
        spec = SPECS["cifar10"]
        super().__init__(
            "cifar10",
            _index_ids(CIFAR10_SIZES[split]),
            channels=3,
            shape=spec.shape,
            description=spec.description,
            options=_options(root, split=split),
            index_ids=True,
        )

    def _jpegs(self) -> tuple[list[bytes], np.ndarray]:
        jpegs, labels = _cifar_jpegs(str(self.path), self.split, *_stat_key(self.path)[1:])
        if len(jpegs) != len(self):
            raise InvgenError(
                f"cifar10: the {self.split} split of {str(self.path)!r} holds {len(jpegs)} images, expected {len(self)}"
            )
        return jpegs, labels

    def label(self, i: int) -> int:
        """The class index (0 .. 9, see ``invgen.data.datasets.CIFAR10_CLASSES``) of the image at position ``i``."""
        return int(self._jpegs()[1][self._check_position(i)])

    def _load(self, i: int) -> Tensor:
        array = decode_jpeg(self._jpegs()[0][i])
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()


def cifar10(split: str = "test", root: str | os.PathLike | None = None, verify: bool = True) -> Cifar10Dataset:
    """CIFAR-10 of a split (test: 10000, train: 50000), each ``(3, 32, 32)``; ids ``"00000"``..."""
    return Cifar10Dataset(split, root, verify)


# --- image files ------------------------------------------------------------------------------------------------
def _file_channels(mode: str) -> int:
    return 1 if mode in GRAY_MODES else 3


# scikit-image's sample photos that ship inside its wheel (no download): name -> skimage.data function
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "page", "rocket",
          "text")  # fmt: skip


def photo(name: str) -> Tensor:
    """A scikit-image sample photo as float32 ``(C, H, W)`` in [0, 1], offline (the files ship with the dependency):
    gray ``camera`` (512x512), ``moon``, ``coins`` (303x384), ``brick``, ``grass``, ``gravel``, ``page``, ``text``;
    RGB ``astronaut`` (512x512), ``coffee`` (400x600), ``chelsea`` (300x451), ``rocket`` (427x640).

    Shape:
        ``(1, H, W)`` or ``(3, H, W)``.
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown scikit-image photo {name!r}; expected one of {', '.join(PHOTOS)}")
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype != np.uint8:
        raise InvgenError(f"skimage.data.{name}() gave {array.dtype}, expected uint8")
    x = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def resize_short_side(x: Tensor, size: int) -> Tensor:
    """Resize so the short side is ``size`` px, keeping the aspect ratio (antialiased bilinear, clamped to [0, 1]):
    how the demo and the colorization benchmark bring photos to the scale of a prior trained on small images.

    Shape:
        ``(C, H, W)`` -> ``(C, h, w)`` with ``min(h, w) = size``.
    """
    h, w = x.shape[-2:]
    shape = (max(size, round(h * size / min(h, w))), max(size, round(w * size / min(h, w))))
    return F.interpolate(x[None], size=shape, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def read_image(path: str | os.PathLike, channels: int | None = None, *, max_pixels: int | None = None) -> Tensor:
    """Read an image file as float32 ``(C, H, W)`` in [0, 1]; ``skimage:NAME`` reads a scikit-image sample photo
    (:func:`photo`).

    Gray files (``L``, ``1``, 16-bit ``I;16``/``I``, ``F``) give C = 1, everything else (RGB, RGBA, palette, CMYK...)
    C = 3; alpha is dropped. 16-bit data are scaled by 1/65535. ``channels`` forces the result: 3 repeats a gray
    file, 1 takes the ITU-R 601 luma of a colour file.

    A missing file raises ``FileNotFoundError``; a folder, an empty, truncated or non-image file, or an image of more
    than ``max_pixels`` pixels (default :func:`invgen.files.max_pixels`: ``INVGEN_MAX_PIXELS`` or 8192 x 8192,
    checked on the header before decoding) a :class:`~invgen.errors.FileError` naming the file
    (:func:`invgen.files.open_image`).

    Shape:
        ``(C, H, W)``, C in {1, 3}.
    """
    from invgen.files import open_image

    if isinstance(path, str) and path.startswith("skimage:"):
        return _convert_channels(photo(path[len("skimage:") :]), channels)
    with open_image(path, limit=max_pixels) as im:
        mode = im.mode
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            array = np.asarray(im).astype(np.float32) / 65535.0
        elif mode == "F":
            array = np.asarray(im, dtype=np.float32)
        elif mode in GRAY_MODES:
            array = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        else:
            array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(np.ascontiguousarray(array))
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    return _convert_channels(x.clamp_(0.0, 1.0), channels)


def _convert_channels(x: Tensor, channels: int | None) -> Tensor:
    if channels == 3 and x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    elif channels == 1 and x.shape[0] == 3:
        x = (x * torch.tensor(LUMA_601, dtype=x.dtype).reshape(3, 1, 1)).sum(0, keepdim=True)
    elif channels not in (None, 1, 3):
        raise ValueError(f"channels: expected None, 1 or 3, got {channels!r}")
    return x.contiguous()


class ImageFolder(Dataset):
    """Image files read on demand (one file per image), in the given order.

    The headers are read at construction (cheap) to fix the channel count (1 when every file is gray, else 3: gray
    files are then repeated to RGB) and the shape (None when sizes vary).

    Shape:
        ``image(i)``: ``(C, H, W)``.
    """

    def __init__(
        self,
        name: str,
        files: list[Path],
        ids: list[str],
        *,
        channels: int | None = None,
        description: str = "",
        options: dict[str, Any] | None = None,
    ) -> None:
        from PIL import Image

        if channels not in (None, 1, 3):
            raise ValueError(f"{name}: channels must be None (from the files), 1 or 3, got {channels!r}")
        modes, sizes = [], set()
        for f in files:
            try:
                with Image.open(f) as im:
                    modes.append(im.mode)
                    sizes.add((im.height, im.width))
            except (OSError, ValueError) as exc:
                raise InvgenError(f"{name}: cannot read the image file {str(f)!r} ({exc})") from exc
        if channels is None:
            channels = 3 if any(_file_channels(m) == 3 for m in modes) else 1
        shape = (channels, *next(iter(sizes))) if len(sizes) == 1 else None
        self.files = list(files)
        super().__init__(name, ids, channels=channels, shape=shape, description=description, options=options)

    def _load(self, i: int) -> Tensor:
        x = read_image(self.files[i], channels=self.channels)
        if self._shape is not None and tuple(x.shape) != self._shape:
            raise InvgenError(f"{self.name}: {self.files[i]} has shape {tuple(x.shape)}, expected {self._shape}")
        return x


def eval_set(name: str, root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """A registered folder test set (``set5``, ``set14``, ``set12``, ``bsd68``, ``cbsd68``, ``kodak24``,
    ``ffhq256-100``): the files listed for it in ``checksums.json``, sorted, ids = file stems."""
    if name not in _EVAL_SETS:
        raise ValueError(f"eval_set: unknown test set {name!r}; expected one of {sorted(_EVAL_SETS)}")
    spec = SPECS[name]
    base = data_root(root)
    files = manifest_files(name)
    check_files(base, files, name, verify)
    rels = sorted(files)
    return ImageFolder(
        name,
        [base / r for r in rels],
        [Path(r).stem for r in rels],
        channels=spec.channels,
        description=spec.description,
        options=_options(root),
    )


_EVAL_SETS = ("set5", "set14", "set12", "bsd68", "cbsd68", "kodak24", "ffhq256-100")


def set5(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """Set5: the 5 HR ground-truth images (``eval/Set5/HR``), RGB, sizes vary."""
    return eval_set("set5", root, verify)


def set14(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """Set14 (colour): 14 images, RGB, sizes vary."""
    return eval_set("set14", root, verify)


def set12(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """Set12: 12 gray images, ``(1, 256, 256)`` or ``(1, 512, 512)``."""
    return eval_set("set12", root, verify)


def bsd68(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """BSD68: 68 gray images, ``(1, 321, 481)`` or ``(1, 481, 321)``."""
    return eval_set("bsd68", root, verify)


def cbsd68(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """CBSD68: the 68 BSD68 images in colour, ``(3, 321, 481)`` or ``(3, 481, 321)``."""
    return eval_set("cbsd68", root, verify)


def kodak24(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """Kodak24: 24 photos, ``(3, 500, 500)``."""
    return eval_set("kodak24", root, verify)


def ffhq256_100(root: str | os.PathLike | None = None, verify: bool = True) -> ImageFolder:
    """100 FFHQ faces, ``(3, 256, 256)``."""
    return eval_set("ffhq256-100", root, verify)


def _folder_ids(rels: list[str]) -> list[str]:
    """Relative paths without suffix; where two files would share an id (``a.png``, ``a.jpg``), keep the suffix."""
    stems = [r.rsplit(".", 1)[0] for r in rels]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else r for s, r in zip(stems, rels)]


def folder(
    path: str | os.PathLike,
    recursive: bool = False,
    verify: bool = False,
    checksums: Mapping[str, str] | str | os.PathLike | None = None,
    channels: int | None = None,
) -> ImageFolder:
    """Every image file (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM) of a folder, sorted by relative path.

    Args:
        path: the folder.
        recursive: also take the files of subfolders (ids are then relative paths such as ``"a/img1"``).
        verify: check each file against ``checksums`` first (a :class:`DataChecksumError` names the first mismatch).
        checksums: ``{path relative to the folder: sha256}`` or a ``sha256sum`` listing file with such paths.
        channels: force 1 (luma) or 3 (RGB); None: 1 when every file is gray, else 3.

    Returns:
        An :class:`ImageFolder` named ``"folder"``; ids are file names without suffix.

    Raises:
        DataNotFoundError: the folder is missing or holds no image file.
    """
    base = Path(path).expanduser()
    if not base.is_dir():
        raise DataNotFoundError(f"folder dataset: {str(base)!r} is not a folder (expected a folder of image files)")
    found = base.rglob("*") if recursive else base.iterdir()
    rels = sorted(p.relative_to(base).as_posix() for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not rels:
        where = "or its subfolders " if recursive else ""
        raise DataNotFoundError(
            f"folder dataset: no image file ({', '.join(IMAGE_SUFFIXES)}) in {str(base)!r} {where}"
            f"(recursive={recursive})"
        )
    if verify:
        if checksums is None:
            raise ValueError("folder(verify=True) needs checksums=: a {relative path: sha256} dict or a sha256sum file")
        sums = dict(checksums) if isinstance(checksums, Mapping) else read_sha256sums(checksums)
        unknown = [r for r in rels if r not in sums]
        if unknown:
            from invgen.data.verify import DataChecksumError

            raise DataChecksumError(
                f"folder dataset {str(base)!r}: no checksum given for {len(unknown)} of {len(rels)} files, "
                f"e.g. {unknown[0]!r}"
            )
        check_files(base, {r: sums[r] for r in rels}, f"folder:{base}", verify=True)
    options = {"path": str(base.resolve()), "recursive": bool(recursive), "channels": channels}
    return ImageFolder(
        "folder",
        [base / r for r in rels],
        _folder_ids(rels),
        channels=channels,
        description=f"images of {base}",
        options=options,
    )
