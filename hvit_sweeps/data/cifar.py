"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle folders (downloaded when missing)."""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision import datasets as tv_datasets

from hvit_sweeps.data.describe import describe_dataset
from hvit_sweeps.data.raw import RawDataset, Split, check_labels, reason
from hvit_sweeps.errors import HvitError

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["read_cifar"]


def _without_md5(files: Sequence[Sequence[str]]) -> list[list[str | None]]:
    return [[name, None] for name, *_ in files]


# Why subclasses: torchvision md5-checks every pickle on each construction.
# That rejects any re-packed copy (and the small real-format fixtures the tests
# write) and re-hashes 160 MB per load. With md5 None, torchvision's
# check_integrity only tests that the file exists; everything else (download,
# the archive's md5 check, unpickling) is torchvision's own code, and a corrupt
# pickle still fails while loading and is reported by name.
class _CIFAR10Files(tv_datasets.CIFAR10):
    train_list = _without_md5(tv_datasets.CIFAR10.train_list)
    test_list = _without_md5(tv_datasets.CIFAR10.test_list)
    meta = {**tv_datasets.CIFAR10.meta, "md5": None}


class _CIFAR100Files(tv_datasets.CIFAR100):
    train_list = _without_md5(tv_datasets.CIFAR100.train_list)
    test_list = _without_md5(tv_datasets.CIFAR100.test_list)
    meta = {**tv_datasets.CIFAR100.meta, "md5": None}


_CIFAR_CLASSES: dict[str, tuple[str, type[tv_datasets.CIFAR10]]] = {
    "cifar100": ("CIFAR-100", _CIFAR100Files),
    "cifar10": ("CIFAR-10", _CIFAR10Files),
}

# What unpickling a damaged or foreign file can raise, beside OSError.
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError, ImportError, IndexError
)  # fmt: skip


def _cifar_files(dataset_cls: type[tv_datasets.CIFAR10], folder: Path) -> list[Path]:
    names = [name for name, _ in dataset_cls.train_list + dataset_cls.test_list] + [dataset_cls.meta["filename"]]
    return [folder / name for name in names]


def read_cifar(config: DataConfig) -> RawDataset:
    title, dataset_cls = _CIFAR_CLASSES[config.dataset]
    folder = config.data_dir / dataset_cls.base_folder
    files = _cifar_files(dataset_cls, folder)
    present = all(path.is_file() for path in files)
    fix = (
        f"put the extracted {dataset_cls.base_folder}/ folder ({', '.join(p.name for p in files)}) "
        f"under {config.data_dir}/ or pass --data-dir"
    )
    if not present and not config.download:
        raise HvitError(f"{title} not found in {folder}/ and downloading is off: {fix}")
    info = describe_dataset(config)
    splits = []
    for train in (True, False):
        try:
            dataset = dataset_cls(root=config.data_dir, train=train, download=not present)
        except (OSError, RuntimeError, tarfile.TarError) as exc:  # URLError is an OSError
            if present:
                raise HvitError(_unreadable_cifar_message(title, files, exc)) from exc
            why = reason(exc)
            raise HvitError(f"{title} not found in {folder}/ and it could not be downloaded ({why}): {fix}") from exc
        except _PICKLE_ERRORS as exc:
            raise HvitError(_unreadable_cifar_message(title, files, exc)) from exc
        splits.append(_cifar_split(dataset))
        check_labels(splits[-1], info.num_classes, source=folder)
    return RawDataset(info=info, train=splits[0], test=splits[1])


def _cifar_split(dataset: tv_datasets.CIFAR10) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    return Split(images=images, labels=torch.as_tensor(dataset.targets, dtype=torch.int64))


def _unreadable_cifar_message(title: str, files: Sequence[Path], exc: BaseException) -> str:
    culprit = _first_unreadable_pickle(files)
    return (
        f"{culprit} is not a readable {title} file ({type(exc).__name__}: {reason(exc)}): "
        f"replace it with the original, or delete {culprit.parent}/ and download again"
    )


def _first_unreadable_pickle(files: Sequence[Path]) -> Path:
    """Runs only after a failure, to name the broken file in the message."""
    for path in files:
        try:
            with path.open("rb") as handle:
                pickle.load(handle, encoding="latin1")
        except (OSError, *_PICKLE_ERRORS):
            return path
    return files[0].parent
