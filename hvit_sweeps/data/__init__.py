"""Datasets and batch loaders for the sweeps.

Two stages, kept apart so that a trial can be planned without touching pixels:

* :func:`describe_dataset` gives the static facts a model needs (classes,
  channels, image size, normalization stats) without decoding images.
* :func:`load_dataset` reads a dataset into uint8 tensors and splits it into
  train / val / test (:class:`DatasetSplits`); :func:`make_loaders` turns those
  into batch iterators that yield normalized float batches on the device.

Modules, one concern each:

* ``info``: :class:`DatasetInfo` and the class-name constants (torch-free).
* ``catalog``: the dataset names and the built-in datasets' facts (torch-free).
* ``settings``: :class:`DataConfig`, the data section of a run's config (torch-free).
* ``describe``: a config's dataset facts, without decoding images (torch-free).
* ``readers``: the reader of each dataset, a typed table.
* ``cifar``, ``fashion_mnist``, ``synthetic``, ``folder``: one reader per source.
* ``raw``: what a reader returns (:class:`Split`), and the checks readers share.
* ``splits``: stratified train / val / test splits and the fingerprint.
* ``seeding``, ``augment``, ``loaders``: random streams, augmentation, batches.

Every user-fixable problem (missing files, bad paths, unreadable images) is
raised as :class:`~hvit_sweeps.errors.HvitError` with a one-line fix.

This package imports nothing heavy itself: the names below are looked up in
their module on first use (PEP 562), so that the config and ``--help`` can
import the catalog without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvit_sweeps.data.catalog import DATASET_NAMES, FOLDER_PREFIX
    from hvit_sweeps.data.describe import describe_dataset
    from hvit_sweeps.data.fashion_mnist import FASHION_MNIST_SYSTEM_DIR
    from hvit_sweeps.data.info import (
        CIFAR10_CLASSES,
        CIFAR100_CLASSES,
        FASHION_MNIST_CLASSES,
        DatasetInfo,
    )
    from hvit_sweeps.data.loaders import BatchLoader, Loaders, make_loaders
    from hvit_sweeps.data.raw import Split
    from hvit_sweeps.data.seeding import derive_seed
    from hvit_sweeps.data.splits import DatasetSplits, load_dataset

# Public name -> the module that defines it.
_EXPORTS = {
    "CIFAR10_CLASSES": "info",
    "CIFAR100_CLASSES": "info",
    "FASHION_MNIST_CLASSES": "info",
    "DatasetInfo": "info",
    "DATASET_NAMES": "catalog",
    "FOLDER_PREFIX": "catalog",
    "describe_dataset": "describe",
    "FASHION_MNIST_SYSTEM_DIR": "fashion_mnist",
    "DatasetSplits": "splits",
    "Split": "raw",
    "load_dataset": "splits",
    "BatchLoader": "loaders",
    "Loaders": "loaders",
    "make_loaders": "loaders",
    "derive_seed": "seeding",
}

__all__ = [  # the same names as _EXPORTS, spelled out for linters and type checkers
    "BatchLoader",
    "CIFAR100_CLASSES",
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DatasetInfo",
    "DatasetSplits",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "FOLDER_PREFIX",
    "Loaders",
    "Split",
    "derive_seed",
    "describe_dataset",
    "load_dataset",
    "make_loaders",
]


assert set(__all__) == set(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
