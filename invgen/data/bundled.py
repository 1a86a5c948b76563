"""Eight test images of each of MNIST, Fashion-MNIST and CIFAR-10, shipped inside the package.

They give clean ground truths where no data root (``INVGEN_DATA``) is set, e.g. ``invgen demo`` on a fresh install.
The files live in ``invgen/data/samples/`` (one uint8 PNG strip per dataset, the eight images side by side; origin
and licences in ``SOURCE.txt`` there) and are written by ``python -m invgen.data.make_samples`` from the test splits
of the data root. Pixels are stored exactly, so :func:`sample_images` equals the corresponding rows of
``invgen.data.load_dataset(name, "test")`` (MNIST and Fashion-MNIST padded by 2 to 32x32 the same way).

Example:
    >>> from invgen.data import sample_images
    >>> sample_images("mnist").shape
    torch.Size([8, 1, 32, 32])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# Test-split indices of the shipped images. MNIST and Fashion-MNIST: the first eight. CIFAR-10 (the archive is ordered
# by class, so the first eight are all airplanes): the first test image of each of the classes airplane, automobile,
# bird, cat, deer, dog, frog and horse.
SAMPLE_INDICES: dict[str, tuple[int, ...]] = {
    "mnist": tuple(range(8)),
    "fashion-mnist": tuple(range(8)),
    "cifar10": tuple(range(0, 8000, 1000)),
}
# stored size (H, W, channels) of one image: MNIST-style images are stored unpadded, 28x28
STORED_SHAPE: dict[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 1),
    "fashion-mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
}
PAD = {"mnist": 2, "fashion-mnist": 2, "cifar10": 0}


def sample_path(name: str) -> Path:
    """The PNG strip of dataset ``name`` (``mnist``, ``fashion-mnist`` or ``cifar10``)."""
    if name not in SAMPLE_INDICES:
        raise ValueError(f"no shipped sample images for {name!r}; expected one of {sorted(SAMPLE_INDICES)}")
    return SAMPLES_DIR / f"{name}.png"


def sample_images(name: str) -> Tensor:
    """The eight shipped test images of a dataset, as float32 in [0, 1].

    Args:
        name: ``mnist``, ``fashion-mnist`` or ``cifar10``.

    Returns:
        The images at test indices ``SAMPLE_INDICES[name]``, equal to those rows of
        ``invgen.data.load_dataset(name, "test")[0]``.

    Shape:
        ``(8, 1, 32, 32)`` for MNIST and Fashion-MNIST (28x28 padded by 2 pixels of background), ``(8, 3, 32, 32)``
        for CIFAR-10.
    """
    from PIL import Image

    path = sample_path(name)
    h, w, c = STORED_SHAPE[name]
    n = len(SAMPLE_INDICES[name])
    with Image.open(path) as im:
        strip = np.asarray(im.convert("L" if c == 1 else "RGB"))
    if strip.shape[:2] != (h, n * w):
        raise ValueError(f"{path}: expected a {h}x{n * w} strip of {n} images, got {strip.shape[0]}x{strip.shape[1]}")
    strip = strip.reshape(h, n, w, c)  # (H, N, W, C)
    x = torch.from_numpy(np.ascontiguousarray(strip.transpose(1, 3, 0, 2))).float().div_(255.0)
    pad = PAD[name]
    return F.pad(x, (pad, pad, pad, pad)) if pad else x
