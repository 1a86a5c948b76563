"""Datasets read from ``INVGEN_DATA`` (MNIST/Fashion-MNIST IDX, CIFAR-10 JPEG archive)."""

from invgen.data.datasets import cifar10, data_root, fashion_mnist, load_dataset, mnist

__all__ = ["cifar10", "data_root", "fashion_mnist", "load_dataset", "mnist"]
