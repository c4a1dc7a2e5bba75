"""The reader of each dataset: the files named by a :class:`DataConfig` into a :class:`RawDataset`.

Importing this imports torch (every reader needs it); the config and ``--help``
use :mod:`~hvit_sweeps.data.catalog` and :mod:`~hvit_sweeps.data.describe` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hvit_sweeps.data.catalog import is_folder
from hvit_sweeps.data.cifar import read_cifar
from hvit_sweeps.data.fashion_mnist import read_fashion_mnist
from hvit_sweeps.data.folder import read_folder
from hvit_sweeps.data.synthetic import read_synthetic

if TYPE_CHECKING:
    from hvit_sweeps.data.raw import RawDataset
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["FOLDER_READER", "READERS", "Reader", "read_raw"]

Reader = Callable[["DataConfig"], "RawDataset"]

# The built-in datasets' readers, by the name the config accepts (the names of catalog.BUILTIN_INFO).
READERS: dict[str, Reader] = {
    "cifar100": read_cifar,
    "cifar10": read_cifar,
    "fashion-mnist": read_fashion_mnist,
    "synthetic": read_synthetic,
}
FOLDER_READER: Reader = read_folder  # any "folder:PATH"


def read_raw(config: DataConfig) -> RawDataset:
    """The dataset ``config`` names, as its source stores it (splitting comes after)."""
    return FOLDER_READER(config) if is_folder(config.dataset) else READERS[config.dataset](config)
