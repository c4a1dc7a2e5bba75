"""The dataset sources: the one place a dataset is added.

A source gives its static facts (a :class:`DatasetInfo`) or a function that
works them out, and its reader. Both functions are named ``"module.function"``
inside this package and imported on first use, so importing the registry (as
the config's validator and ``--help`` do) imports no torch.

To add a dataset: write ``hvit_sweeps/data/<name>.py`` with a reader that takes
the :class:`~hvit_sweeps.config.DataConfig` and returns a
:class:`~hvit_sweeps.data.raw.RawDataset`, then add one entry to ``SOURCES``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvit_sweeps.data.info import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_MNIST_CLASSES,
    DatasetInfo,
)

if TYPE_CHECKING:
    from hvit_sweeps.config import DataConfig
    from hvit_sweeps.data.raw import RawDataset

__all__ = [
    "DATASET_NAMES",
    "FOLDER_PREFIX",
    "FOLDER_SOURCE",
    "SOURCES",
    "Source",
    "describe_dataset",
    "is_folder",
    "read_raw",
    "source_for",
]

FOLDER_PREFIX = "folder:"


@dataclass(frozen=True)
class Source:
    """One dataset source.

    Args:
        reader: ``"module.function"`` in this package: reads the files named by a
            ``DataConfig`` into a ``RawDataset``.
        info: The facts, for a source that knows them without files.
        describer: ``"module.function"`` called with ``(dataset, image_size)``,
            for a source whose facts need a look at its files.
    """

    reader: str
    info: DatasetInfo | None = None
    describer: str = ""

    def __post_init__(self) -> None:
        if (self.info is None) == (not self.describer):
            raise ValueError(f"source {self.reader} needs exactly one of info or describer")

    def read(self, config: DataConfig) -> RawDataset:
        return _resolve(self.reader)(config)

    def describe(self, dataset: str, image_size: int | None) -> DatasetInfo:
        if self.info is not None:
            return self.info
        return _resolve(self.describer)(dataset, image_size)


_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# The built-in datasets, by the name the config accepts.
SOURCES: dict[str, Source] = {
    "cifar100": Source(
        "cifar.read_cifar",
        info=DatasetInfo(
            "cifar100", 100, 3, 32, CIFAR100_CLASSES, _CIFAR100_MEAN, _CIFAR100_STD, synthetic=False, hflip=True
        ),
    ),
    "cifar10": Source(
        "cifar.read_cifar",
        info=DatasetInfo(
            "cifar10", 10, 3, 32, CIFAR10_CLASSES, _CIFAR10_MEAN, _CIFAR10_STD, synthetic=False, hflip=True
        ),
    ),
    "fashion-mnist": Source(
        "fashion_mnist.read_fashion_mnist",
        info=DatasetInfo(
            "fashion-mnist", 10, 1, 28, FASHION_MNIST_CLASSES, (0.2860,), (0.3530,), synthetic=False, hflip=True
        ),
    ),
    "synthetic": Source(
        "synthetic.read_synthetic",
        info=DatasetInfo(
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
    ),
}
DATASET_NAMES = tuple(SOURCES)

# Any ImageFolder tree, named "folder:PATH"; its facts come from a scan.
FOLDER_SOURCE = Source("folder.read_folder", describer="folder.describe_folder")


def is_folder(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)


def source_for(dataset: str) -> Source:
    """The source of a dataset name as the config validated it."""
    return FOLDER_SOURCE if is_folder(dataset) else SOURCES[dataset]


def read_raw(config: DataConfig) -> RawDataset:
    return source_for(config.dataset).read(config)


def describe_dataset(config: DataConfig) -> DatasetInfo:
    """Static facts about ``config.dataset``, without decoding any image.

    For ``folder:`` datasets the class folders of ``train/`` are scanned and
    only image headers are read (for the channel count); mean/std are
    placeholders (0.5, 0.25) because measuring them needs the pixels:
    :func:`~hvit_sweeps.data.splits.load_dataset` returns the measured ones in
    ``DatasetSplits.info``. The answer is kept for the life of the process, so
    building many configs (a study's trials) scans a folder once.
    """
    return _describe(config.dataset, config.image_size)


# Keyed on what the facts depend on; data_dir is left out because no source's
# facts depend on where its files are downloaded to.
@functools.cache
def _describe(dataset: str, image_size: int | None) -> DatasetInfo:
    return source_for(dataset).describe(dataset, image_size)


def _resolve(ref: str) -> Callable[..., Any]:
    """``"module.function"`` in this package, imported now: readers need torch, the registry does not."""
    module, _, name = ref.rpartition(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)
