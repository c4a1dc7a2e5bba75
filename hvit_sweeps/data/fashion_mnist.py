"""Fashion-MNIST: torchvision's layout under data_dir, Debian's idx files, or a download."""

from __future__ import annotations

import gzip
import math
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision import datasets as tv_datasets

from hvit_sweeps.data.describe import describe_dataset
from hvit_sweeps.data.raw import RawDataset, Split, check_labels, reason
from hvit_sweeps.errors import HvitError

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["FASHION_MNIST_SYSTEM_DIR", "read_fashion_mnist"]

# Debian's `fashion-mnist` data package puts the idx.gz files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_NAMES = [name for pair in _IDX_FILES.values() for name in pair]
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049


def read_fashion_mnist(config: DataConfig) -> RawDataset:
    """torchvision's layout under data_dir first, then Debian's files, then a download."""
    info = describe_dataset(config)
    raw_dir = config.data_dir / "FashionMNIST" / "raw"
    if _has_files(raw_dir, [name.removesuffix(".gz") for name in _IDX_NAMES]):
        return RawDataset(info, *_read_torchvision_fashion(config.data_dir))
    if _has_files(FASHION_MNIST_SYSTEM_DIR, _IDX_NAMES):
        return RawDataset(info, *_read_idx_dir(FASHION_MNIST_SYSTEM_DIR))
    places = f"{raw_dir}/ nor {FASHION_MNIST_SYSTEM_DIR}/"
    fix = f"install Debian's fashion-mnist package, put the idx files under {raw_dir}/ or pass --data-dir"
    if not config.download:
        raise HvitError(f"Fashion-MNIST not found in {places} and downloading is off: {fix}")
    try:
        tv_datasets.FashionMNIST(root=config.data_dir, download=True)
    except (OSError, RuntimeError, tarfile.TarError) as exc:
        why = reason(exc)
        message = f"Fashion-MNIST not found in {places} and it could not be downloaded ({why}): {fix}"
        raise HvitError(message) from exc
    return RawDataset(info, *_read_torchvision_fashion(config.data_dir))


def _has_files(folder: Path, names: Sequence[str]) -> bool:
    return all((folder / name).is_file() for name in names)


def _read_torchvision_fashion(root: Path) -> tuple[Split, Split]:
    splits = []
    for train in (True, False):
        try:
            dataset = tv_datasets.FashionMNIST(root=root, train=train, download=False)
        except (OSError, RuntimeError, ValueError, AssertionError) as exc:
            raise HvitError(
                f"cannot read Fashion-MNIST from {root / 'FashionMNIST'}/ ({reason(exc)}): "
                "replace its raw/ files or delete the folder"
            ) from exc
        splits.append(Split(images=dataset.data.unsqueeze(1).contiguous(), labels=dataset.targets.to(torch.int64)))
    return splits[0], splits[1]


def _read_idx_dir(folder: Path) -> tuple[Split, Split]:
    splits = []
    for images_name, labels_name in _IDX_FILES.values():
        images = _read_idx(folder / images_name, magic=_IDX_IMAGES_MAGIC)
        labels = _read_idx(folder / labels_name, magic=_IDX_LABELS_MAGIC).to(torch.int64)
        if images.shape[0] != labels.shape[0]:
            raise HvitError(f"{folder / images_name} and {labels_name} disagree on the sample count: reinstall them")
        split = Split(images=images.unsqueeze(1), labels=labels)  # (N, 1, 28, 28)
        check_labels(split, 10, source=folder / labels_name)
        splits.append(split)
    return splits[0], splits[1]


def _read_idx(path: Path, *, magic: int) -> torch.Tensor:
    """Parse a gzipped idx file (big-endian header: magic, then one uint32 per dim)."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = bytearray(handle.read())  # writable, so torch.frombuffer does not warn
    except (OSError, EOFError, zlib.error) as exc:
        raise HvitError(f"cannot read {path} ({reason(exc)}): reinstall the Fashion-MNIST files") from exc
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise HvitError(f"{path} is not an idx file (magic {found}, not {magic}): reinstall the Fashion-MNIST files")
    ndim = 3 if magic == _IDX_IMAGES_MAGIC else 1
    dims = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    header = 4 + 4 * ndim
    if len(raw) != header + math.prod(dims) or not math.prod(dims):
        raise HvitError(f"{path} is truncated or empty: reinstall the Fashion-MNIST files")
    return torch.frombuffer(raw, dtype=torch.uint8, offset=header).reshape(dims)
