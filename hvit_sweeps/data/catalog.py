"""The dataset names a config accepts, and the built-in datasets' facts.

A leaf of the package (it imports only :mod:`~hvit_sweeps.data.info`), so that the
config can validate a dataset name, and ``--help`` list them, without torch and
without the readers. To add a dataset: its facts here, and its reader in
:data:`hvit_sweeps.data.readers.READERS` (a test checks the two name the same ones).
"""

from __future__ import annotations

from hvit_sweeps.data.info import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_MNIST_CLASSES,
    DatasetInfo,
)

__all__ = ["BUILTIN_INFO", "DATASET_NAMES", "FOLDER_PREFIX", "is_folder"]

FOLDER_PREFIX = "folder:"  # any ImageFolder tree, named "folder:PATH"; its facts come from a scan

_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# The built-in datasets, by the name the config accepts.
BUILTIN_INFO: dict[str, DatasetInfo] = {
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, CIFAR100_CLASSES, _CIFAR100_MEAN, _CIFAR100_STD, synthetic=False, hflip=True
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, CIFAR10_CLASSES, _CIFAR10_MEAN, _CIFAR10_STD, synthetic=False, hflip=True
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, 28, FASHION_MNIST_CLASSES, (0.2860,), (0.3530,), synthetic=False, hflip=True
    ),
    "synthetic": DatasetInfo(
        "synthetic",
        100,
        3,
        32,
        tuple(f"class_{i:03d}" for i in range(100)),
        _CIFAR100_MEAN,
        _CIFAR100_STD,
        synthetic=True,
        hflip=True,
    ),
}
DATASET_NAMES = tuple(BUILTIN_INFO)


def is_folder(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)
