"""Dataset readers. Data never download: they are read from the folder named by ``INVGEN_DATA``.

Every reader returns a float tensor ``(N, C, H, W)`` in [0, 1] (and labels where the dataset has them).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from invgen.errors import InvgenError


class DataNotFoundError(InvgenError, FileNotFoundError):
    """The data root or a dataset file is missing."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``INVGEN_DATA``; a clear error when missing."""
    value = root if root is not None else os.environ.get("INVGEN_DATA")
    if not value:
        raise DataNotFoundError(
            "no data root: set INVGEN_DATA to the folder holding mnist/, fashion-mnist/, cifar10/ ... "
            "(for example INVGEN_DATA=../shared/data) or pass root="
        )
    path = Path(value)
    if not path.is_dir():
        raise DataNotFoundError(f"data root {str(path)!r} (from INVGEN_DATA or root=) is not a folder")
    return path


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"missing IDX file {str(path)!r}")
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise InvgenError(f"{path}: not an unsigned-byte IDX file (magic {zero:#x}, type {dtype_code:#x})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_dataset(folder: str, split: str, root: str | os.PathLike | None, pad: int) -> tuple[Tensor, Tensor]:
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    base = data_root(root) / folder
    prefix = "train" if split == "train" else "t10k"
    images = load_idx(base / f"{prefix}-images-idx3-ubyte.gz")
    labels = load_idx(base / f"{prefix}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    return x, torch.from_numpy(labels.astype(np.int64))


def mnist(split: str = "train", root: str | os.PathLike | None = None, pad: int = 2) -> tuple[Tensor, Tensor]:
    """MNIST digits, padded by ``pad`` pixels of background (2 gives the usual 32x32).

    Returns:
        images ``(N, 1, 28 + 2 pad, 28 + 2 pad)`` in [0, 1] and labels ``(N,)``.
    """
    return _idx_dataset("mnist", split, root, pad)


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, pad: int = 2) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST, padded like :func:`mnist`."""
    return _idx_dataset("fashion-mnist", split, root, pad)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar10(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """CIFAR-10 from the JPEG archive ``cifar10/cifar10_jpg.tar.gz`` (quality ~75, so lossy), in archive order.

    Returns:
        images ``(N, 3, 32, 32)`` in [0, 1] and labels ``(N,)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    archive = data_root(root) / "cifar10" / "cifar10_jpg.tar.gz"
    images, labels = read_cifar10_archive(archive, split)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(), torch.from_numpy(labels)


def read_cifar10_archive(archive: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split of the CIFAR-10 JPEG archive, ordered by (class name, file name).

    Returns:
        images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` int64.
    """
    jpegs, labels = read_cifar10_jpegs(archive, split)
    return np.stack([decode_jpeg(data) for data in jpegs]), labels


def read_cifar10_jpegs(archive: str | os.PathLike, split: str) -> tuple[list[bytes], np.ndarray]:
    """The undecoded JPEG files of one split of the CIFAR-10 archive, ordered by (class name, file name), and labels."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataNotFoundError(f"missing CIFAR-10 archive {str(archive)!r}")
    jpegs, labels, names = [], [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != split or not parts[2].endswith(".jpg"):
                continue
            jpegs.append(tar.extractfile(member).read())  # type: ignore[union-attr]
            labels.append(CIFAR10_CLASSES.index(parts[1]))
            names.append((parts[1], parts[2]))
    order = sorted(range(len(names)), key=lambda i: names[i])
    return [jpegs[i] for i in order], np.array([labels[i] for i in order], dtype=np.int64)


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode an image file's bytes to ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


_READERS = {"mnist": mnist, "fashion-mnist": fashion_mnist, "cifar10": cifar10}


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Load a dataset by name: ``mnist``, ``fashion-mnist`` or ``cifar10``."""
    if name not in _READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_READERS)}")
    return _READERS[name](split, root)
