"""Write the shipped sample images ``invgen/data/samples/{mnist,fashion-mnist,cifar10}.png`` from the data root.

Usage (from the project root, with the shared data beside it)::

    INVGEN_DATA=../shared/data python -m invgen.data.make_samples

Each file is a uint8 PNG strip of the test images at ``invgen.data.bundled.SAMPLE_INDICES[name]``, side by side
(MNIST and Fashion-MNIST unpadded 28x28 gray, CIFAR-10 32x32 RGB as decoded from the JPEG archive), so that
``invgen.data.sample_images(name)`` reproduces ``invgen.data.load_dataset(name, "test")`` exactly; the script reads
each file back and checks that.
"""

from __future__ import annotations

import argparse

import torch

from invgen.data.bundled import PAD, SAMPLE_INDICES, sample_images, sample_path
from invgen.data.datasets import load_dataset


def write(name: str, root: str | None = None) -> None:
    """Write the PNG strip of ``name`` from the test split under ``root`` (else ``INVGEN_DATA``) and check it."""
    from PIL import Image

    images = load_dataset(name, "test", root)[0][list(SAMPLE_INDICES[name])]
    pad = PAD[name]
    stored = images[..., pad : images.shape[-2] - pad, pad : images.shape[-1] - pad] if pad else images
    u8 = (stored * 255.0).round().to(torch.uint8).numpy()  # exact: the readers divide uint8 by 255
    n, c, h, w = u8.shape
    strip = u8.transpose(2, 0, 3, 1).reshape(h, n * w, c)
    path = sample_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip[..., 0] if c == 1 else strip).save(path, optimize=True)  # uint8 -> "L" or "RGB"
    if not torch.equal(sample_images(name), images):
        raise SystemExit(f"make_samples: {path} does not read back as the test images of {name}")
    print(f"{path}: test images {list(SAMPLE_INDICES[name])} ({path.stat().st_size} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m invgen.data.make_samples", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: INVGEN_DATA)")
    parser.add_argument("names", nargs="*", default=sorted(SAMPLE_INDICES), help="datasets (default: all three)")
    args = parser.parse_args(argv)
    for name in args.names:
        write(name, args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
