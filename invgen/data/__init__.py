"""Datasets read from ``INVGEN_DATA``: registered, checksum-verified image sets and the raw array readers.

``invgen.dataset(name)`` builds a registered :class:`Dataset` (``mnist``, ``fashion-mnist``, ``cifar10``, ``set5``,
``set14``, ``set12``, ``bsd68``, ``cbsd68``, ``kodak24``, ``ffhq256-100``, ``folder``); ``mnist``/``fashion_mnist``/
``cifar10`` here return whole splits as tensors. ``sample_images(name)`` gives eight test images of MNIST, Fashion-MNIST
or CIFAR-10 shipped inside the package, for use without a data root.
"""

from invgen.data.base import Dataset, UnknownIdError, from_config
from invgen.data.bundled import sample_images
from invgen.data.datasets import DataNotFoundError, cifar10, data_root, fashion_mnist, load_dataset, mnist
from invgen.data.sets import folder, read_image
from invgen.data.verify import DataChecksumError

__all__ = [
    "DataChecksumError",
    "DataNotFoundError",
    "Dataset",
    "UnknownIdError",
    "cifar10",
    "data_root",
    "fashion_mnist",
    "folder",
    "from_config",
    "load_dataset",
    "mnist",
    "read_image",
    "sample_images",
]
