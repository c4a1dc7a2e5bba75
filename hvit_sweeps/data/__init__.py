"""Datasets and batch loaders for the sweeps.

Two stages, kept apart so that a trial can be planned without touching pixels:

* :func:`describe_dataset` gives the static facts a model needs (classes,
  channels, image size, normalization stats) without decoding images.
* :func:`load_dataset` reads a dataset into uint8 tensors and splits it into
  train / val / test (:class:`DatasetSplits`); :func:`make_loaders` turns those
  into batch iterators that yield normalized float batches on the device.

There are two loader kinds with one contract (:class:`BatchLoader`):

* ``cpu``: a :class:`torch.utils.data.DataLoader` with per-sample torchvision v2
  augmentation in worker processes; the batch is normalized on the device.
* ``device``: the whole dataset lives on the device and is augmented per batch
  there, as in airbench (Keller Jordan, 2024). No worker processes, no host
  round trips.

Every user-fixable problem (missing files, bad paths, unreadable images) is
raised as :class:`~hvit_sweeps.errors.HvitError` with a one-line fix.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets as tv_datasets
from torchvision.transforms import v2

from hvit_sweeps.config import BUILTIN_DATASETS, FOLDER_PREFIX, DataConfig
from hvit_sweeps.errors import HvitError

__all__ = [
    "BUILTIN_DATASETS",
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "BatchLoader",
    "DatasetInfo",
    "DatasetSplits",
    "Loaders",
    "Split",
    "derive_seed",
    "describe_dataset",
    "load_dataset",
    "make_loaders",
]

DEFAULT_FOLDER_IMAGE_SIZE = 32
CROP_PADDING = 4
# TrivialAugment / RandAugment draw one op per call; on the device path a call
# covers this many samples, trading per-sample randomness for speed.
POLICY_CHUNK = 16

# Debian's `fashion-mnist` data package puts the idx.gz files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# The official fine-label order of CIFAR-100 (label i is CIFAR100_CLASSES[i]).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


# --------------------------------------------------------------------------- config


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: what a model and a report need to know."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    synthetic: bool
    hflip: bool

    @property
    def label(self) -> str:
        """Human-readable name; says loudly when the data is not real."""
        if self.synthetic:
            return f"{self.name} (random CIFAR-100-shaped data, not real images)"
        return self.name


@dataclass
class Split:
    """One split in memory: uint8 images (N, C, H, W) and int64 labels (N,), on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DatasetSplits:
    """A loaded dataset: info, the three splits, and a content hash of all of them."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    fingerprint: str

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


class BatchLoader(Protocol):
    """What the training loop iterates over.

    Yields ``(x, y)`` on the loader's device: ``x`` float32 normalized
    (B, C, H, W); ``y`` int64 (B,), or float (B, num_classes) soft targets from
    a train loader with MixUp/CutMix on. ``num_samples`` is the split's size.
    """

    num_samples: int

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass draw epoch ``epoch``'s order and augmentation (epochs count from 1)."""


@dataclass
class Loaders:
    """Train, val and test loaders of one kind ("cpu" or "device").

    ``train`` reshuffles and augments each epoch and drops the last partial
    batch, so every step has the same shape (a CUDA graph can capture it); a
    train split smaller than the batch size gives one batch of all its samples.
    ``val`` and ``test`` keep order and every sample (the last batch may be smaller).
    """

    train: BatchLoader
    val: BatchLoader
    test: BatchLoader
    kind: str


@dataclass
class _RawDataset:
    """What a reader returns; ``val``/``test`` are None when the source has none."""

    info: DatasetInfo
    train: Split
    test: Split | None
    val: Split | None = None


# --------------------------------------------------------------------------- static info

_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

_BUILTIN_INFO = {
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


def describe_dataset(config: DataConfig) -> DatasetInfo:
    """Static facts about ``config.dataset``, without decoding any image.

    For ``folder:`` datasets the class folders of ``train/`` are scanned and
    only image headers are read (for the channel count); mean/std are
    placeholders (0.5, 0.25) because measuring them needs the pixels:
    :func:`load_dataset` returns the measured ones in ``DatasetSplits.info``.
    """
    if _is_folder(config.dataset):
        return _describe_folder(config)
    return _BUILTIN_INFO[config.dataset]


# --------------------------------------------------------------------------- loading


def load_dataset(config: DataConfig, *, seed: int) -> DatasetSplits:
    """Read the dataset and split it into train / val / test.

    Order of operations: the train pool is cut to ``max_train_samples``
    (stratified), then ``val_split`` of it becomes val (stratified, unless the
    source has its own val set), then val and test are each capped at
    ``max_eval_samples``. A ``folder:`` dataset without ``test/`` uses its val
    split as the test split too. ``seed`` changes only which samples go where.
    """
    raw = _read_raw(config)
    pool = _stratified_subset(raw.train, config.max_train_samples, seed=seed)
    if raw.val is None:
        train, val = _stratified_split(pool, config.val_split, seed=seed)
    else:
        train, val = pool, raw.val
    val = _stratified_subset(val, config.max_eval_samples, seed=seed)
    test = val if raw.test is None else _stratified_subset(raw.test, config.max_eval_samples, seed=seed)
    fingerprint = _fingerprint(raw.info.name, (train, val, test))
    return DatasetSplits(info=raw.info, train=train, val=val, test=test, fingerprint=fingerprint)


def _read_raw(config: DataConfig) -> _RawDataset:
    if _is_folder(config.dataset):
        return _load_folder(config)
    readers: dict[str, Callable[[DataConfig], _RawDataset]] = {
        "cifar100": _load_cifar,
        "cifar10": _load_cifar,
        "fashion-mnist": _load_fashion_mnist,
        "synthetic": _load_synthetic,
    }
    return readers[config.dataset](config)


def _fingerprint(name: str, splits: Sequence[Split]) -> str:
    """sha256 over the name and every image/label byte: same data, same hash."""
    digest = hashlib.sha256(name.encode())
    for split in splits:
        for tensor in (split.images, split.labels):
            array = tensor.contiguous().numpy()
            digest.update(f"{array.dtype}{array.shape}".encode())  # so a reshape changes the hash
            digest.update(array.data)
    return digest.hexdigest()[:16]


def _reason(exc: BaseException) -> str:
    """An exception as one short line, for embedding in a one-line HvitError."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _take(split: Split, indices: torch.Tensor) -> Split:
    return Split(images=split.images[indices], labels=split.labels[indices])


def _check_labels(split: Split, num_classes: int, *, source: Path) -> None:
    if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < num_classes:
        raise HvitError(f"{source} has labels outside 0..{num_classes - 1}: replace it with the original files")


# --------------------------------------------------------------------------- stratified splits


def _stratified_partition(
    labels: torch.Tensor, counts: Sequence[int], *, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``counts[k]`` random samples of the k-th class present in ``labels``.

    The one sampling mechanism behind both the val split and the
    ``max_*_samples`` subsets. One generator seeded with ``seed`` permutes each
    class's indices in class order, so the result depends only on the labels
    and the seed. Returns (picked, rest), each sorted to keep the source order.
    """
    generator = torch.Generator().manual_seed(seed)
    picked, rest = [], []
    for cls, count in zip(labels.unique().tolist(), counts):
        members = (labels == cls).nonzero().flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        picked.append(shuffled[:count])
        rest.append(shuffled[count:])
    return torch.cat(picked).sort().values, torch.cat(rest).sort().values


def _class_sizes(labels: torch.Tensor) -> list[int]:
    return labels.unique(return_counts=True)[1].tolist()


def _split_counts(sizes: Sequence[int], fraction: float) -> list[int]:
    """Per class round(n * fraction), at least 1 and at most n - 1 when n >= 2."""
    # floor(x + 0.5) rounds half up; Python's round() would round 2.5 to 2.
    return [min(max(math.floor(n * fraction + 0.5), 1), n - 1) if n >= 2 else 0 for n in sizes]


def _subset_counts(sizes: Sequence[int], total: int) -> list[int]:
    """Exactly ``total`` samples spread in proportion to class size (largest remainder)."""
    pool = sum(sizes)
    counts = [n * total // pool for n in sizes]
    remainders = [n * total % pool for n in sizes]
    by_remainder = sorted(range(len(sizes)), key=lambda k: (-remainders[k], k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _stratified_split(split: Split, fraction: float, *, seed: int) -> tuple[Split, Split]:
    """(kept, held_out) with ``fraction`` of every class held out."""
    held_out, kept = _stratified_partition(split.labels, _split_counts(_class_sizes(split.labels), fraction), seed=seed)
    return _take(split, kept), _take(split, held_out)


def _stratified_subset(split: Split, max_samples: int | None, *, seed: int) -> Split:
    """At most ``max_samples`` samples with the class mix of ``split``."""
    if max_samples is None or len(split) <= max_samples:
        return split
    picked, _ = _stratified_partition(split.labels, _subset_counts(_class_sizes(split.labels), max_samples), seed=seed)
    return _take(split, picked)


# --------------------------------------------------------------------------- CIFAR


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


def _load_cifar(config: DataConfig) -> _RawDataset:
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
    info = _BUILTIN_INFO[config.dataset]
    splits = []
    for train in (True, False):
        try:
            dataset = dataset_cls(root=config.data_dir, train=train, download=not present)
        except (OSError, RuntimeError, tarfile.TarError) as exc:  # URLError is an OSError
            if present:
                raise HvitError(_unreadable_cifar_message(title, files, exc)) from exc
            reason = _reason(exc)
            raise HvitError(f"{title} not found in {folder}/ and it could not be downloaded ({reason}): {fix}") from exc
        except _PICKLE_ERRORS as exc:
            raise HvitError(_unreadable_cifar_message(title, files, exc)) from exc
        splits.append(_cifar_split(dataset))
        _check_labels(splits[-1], info.num_classes, source=folder)
    return _RawDataset(info=info, train=splits[0], test=splits[1])


def _cifar_split(dataset: tv_datasets.CIFAR10) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    return Split(images=images, labels=torch.as_tensor(dataset.targets, dtype=torch.int64))


def _unreadable_cifar_message(title: str, files: Sequence[Path], exc: BaseException) -> str:
    culprit = _first_unreadable_pickle(files)
    return (
        f"{culprit} is not a readable {title} file ({type(exc).__name__}: {_reason(exc)}): "
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


# --------------------------------------------------------------------------- Fashion-MNIST

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_NAMES = [name for pair in _IDX_FILES.values() for name in pair]
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049


def _load_fashion_mnist(config: DataConfig) -> _RawDataset:
    """torchvision's layout under data_dir first, then Debian's files, then a download."""
    info = _BUILTIN_INFO["fashion-mnist"]
    raw_dir = config.data_dir / "FashionMNIST" / "raw"
    if _has_files(raw_dir, [name.removesuffix(".gz") for name in _IDX_NAMES]):
        return _RawDataset(info, *_read_torchvision_fashion(config.data_dir))
    if _has_files(FASHION_MNIST_SYSTEM_DIR, _IDX_NAMES):
        return _RawDataset(info, *_read_idx_dir(FASHION_MNIST_SYSTEM_DIR))
    places = f"{raw_dir}/ nor {FASHION_MNIST_SYSTEM_DIR}/"
    fix = f"install Debian's fashion-mnist package, put the idx files under {raw_dir}/ or pass --data-dir"
    if not config.download:
        raise HvitError(f"Fashion-MNIST not found in {places} and downloading is off: {fix}")
    try:
        tv_datasets.FashionMNIST(root=config.data_dir, download=True)
    except (OSError, RuntimeError, tarfile.TarError) as exc:
        reason = _reason(exc)
        message = f"Fashion-MNIST not found in {places} and it could not be downloaded ({reason}): {fix}"
        raise HvitError(message) from exc
    return _RawDataset(info, *_read_torchvision_fashion(config.data_dir))


def _has_files(folder: Path, names: Sequence[str]) -> bool:
    return all((folder / name).is_file() for name in names)


def _read_torchvision_fashion(root: Path) -> tuple[Split, Split]:
    splits = []
    for train in (True, False):
        try:
            dataset = tv_datasets.FashionMNIST(root=root, train=train, download=False)
        except (OSError, RuntimeError, ValueError, AssertionError) as exc:
            raise HvitError(
                f"cannot read Fashion-MNIST from {root / 'FashionMNIST'}/ ({_reason(exc)}): "
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
        _check_labels(split, 10, source=folder / labels_name)
        splits.append(split)
    return splits[0], splits[1]


def _read_idx(path: Path, *, magic: int) -> torch.Tensor:
    """Parse a gzipped idx file (big-endian header: magic, then one uint32 per dim)."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = bytearray(handle.read())  # writable, so torch.frombuffer does not warn
    except (OSError, EOFError, zlib.error) as exc:
        raise HvitError(f"cannot read {path} ({_reason(exc)}): reinstall the Fashion-MNIST files") from exc
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise HvitError(f"{path} is not an idx file (magic {found}, not {magic}): reinstall the Fashion-MNIST files")
    ndim = 3 if magic == _IDX_IMAGES_MAGIC else 1
    dims = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    header = 4 + 4 * ndim
    if len(raw) != header + math.prod(dims) or not math.prod(dims):
        raise HvitError(f"{path} is truncated or empty: reinstall the Fashion-MNIST files")
    return torch.frombuffer(raw, dtype=torch.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- synthetic

# Fixed, so the synthetic data is the same for every run and every split seed.
_SYNTHETIC_SEED = 1234
_SYNTHETIC_TRAIN, _SYNTHETIC_TEST = 50_000, 10_000


def _load_synthetic(config: DataConfig) -> _RawDataset:
    """Random CIFAR-100-shaped data that a model can still learn.

    Each class has a fixed low-frequency colour template (4x4 noise upsampled to
    32x32); an image is ``128 + 60 * template + 40 * noise``. Only as many
    images as the caps allow are generated.
    """
    info = _BUILTIN_INFO["synthetic"]
    templates = _synthetic_templates(info.num_classes, size=info.image_size)
    n_train = min(_SYNTHETIC_TRAIN, config.max_train_samples or _SYNTHETIC_TRAIN)
    n_test = min(_SYNTHETIC_TEST, config.max_eval_samples or _SYNTHETIC_TEST)
    train = _synthetic_split(templates, n_train, seed=_SYNTHETIC_SEED + 1)
    test = _synthetic_split(templates, n_test, seed=_SYNTHETIC_SEED + 2)
    return _RawDataset(info=info, train=train, test=test)


def _synthetic_templates(num_classes: int, *, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    coarse = torch.randn((num_classes, 3, 4, 4), generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)  # (K, 3, H, W)


def _synthetic_split(templates: torch.Tensor, count: int, *, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % templates.shape[0]  # balanced classes
    chunks = []
    for part in labels.split(4096):  # bounded float memory for 50k images
        noise = torch.randn((len(part), *templates.shape[1:]), generator=generator)
        pixels = 128 + 60 * templates[part] + 40 * noise
        chunks.append(pixels.round_().clamp_(0, 255).to(torch.uint8))
    return Split(images=torch.cat(chunks), labels=labels)


# --------------------------------------------------------------------------- folder:PATH

_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@dataclass(frozen=True)
class _FolderTree:
    """A scanned ImageFolder tree: (path, class index) samples per split."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]] | None
    test: list[tuple[str, int]] | None

    def all_samples(self) -> list[tuple[str, int]]:
        return self.train + (self.val or []) + (self.test or [])


def _is_folder(dataset: str) -> bool:
    return dataset.startswith(FOLDER_PREFIX)


def _folder_root(dataset: str) -> Path:
    return Path(dataset[len(FOLDER_PREFIX) :].strip()).expanduser().resolve()


def _describe_folder(config: DataConfig) -> DatasetInfo:
    tree = _scan_folder_tree(_folder_root(config.dataset))
    channels = 1 if all(_image_mode(path) in _GRAY_MODES for path, _ in tree.all_samples()) else 3
    return _folder_info(tree, config, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)


def _folder_info(
    tree: _FolderTree, config: DataConfig, *, channels: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> DatasetInfo:
    return DatasetInfo(
        name=f"{FOLDER_PREFIX}{tree.root}",
        num_classes=len(tree.classes),
        channels=channels,
        image_size=config.image_size or DEFAULT_FOLDER_IMAGE_SIZE,
        class_names=tree.classes,
        mean=mean,
        std=std,
        synthetic=False,
        hflip=True,
    )


def _load_folder(config: DataConfig) -> _RawDataset:
    """Decode an ImageFolder tree: ``train/``, optional ``val/`` and ``test/``.

    Images become RGB (or single-channel when every image is grayscale) resized
    to ``image_size``. Without ``val/``, val is split from train; without
    ``test/``, the val split doubles as the test split. Mean/std are measured
    on the train images.
    """
    tree = _scan_folder_tree(_folder_root(config.dataset))
    size = config.image_size or DEFAULT_FOLDER_IMAGE_SIZE
    decoded = {role: _decode_samples(samples, size=size) for role, samples in _folder_roles(tree).items()}
    gray = all(is_gray for _, _, is_gray in decoded.values())
    splits = {role: _folder_split(rgb, labels, gray=gray) for role, (rgb, labels, _) in decoded.items()}
    mean, std = _channel_stats(splits["train"].images)
    info = _folder_info(tree, config, channels=1 if gray else 3, mean=mean, std=std)
    return _RawDataset(info=info, train=splits["train"], test=splits.get("test"), val=splits.get("val"))


def _folder_roles(tree: _FolderTree) -> dict[str, list[tuple[str, int]]]:
    roles = {"train": tree.train, "val": tree.val, "test": tree.test}
    return {role: samples for role, samples in roles.items() if samples is not None}


def _scan_folder_tree(root: Path) -> _FolderTree:
    if not root.is_dir():
        raise HvitError(
            f"dataset folder {root} does not exist: check the path after folder: "
            "(it needs train/<class>/ image folders)"
        )
    if not (root / "train").is_dir():
        raise HvitError(f"{root} has no train/ folder: arrange images as {root}/train/<class>/<image>.png")
    classes, train = _scan_split_dir(root / "train")
    empty = [name for k, name in enumerate(classes) if not any(label == k for _, label in train)]
    if empty:
        names = ", ".join(empty)
        raise HvitError(f"{root / 'train'} has class folders with no images ({names}): add images or remove them")
    val, test = (_scan_eval_dir(root / role, classes) for role in ("val", "test"))
    return _FolderTree(root=root, classes=classes, train=train, val=val, test=test)


def _scan_split_dir(split_dir: Path) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    classes = tuple(sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir()))  # as ImageFolder
    if not classes:
        raise HvitError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    samples = tv_datasets.ImageFolder(split_dir, allow_empty=True).samples
    if not samples:
        extensions = ", ".join(tv_datasets.folder.IMG_EXTENSIONS)
        raise HvitError(f"{split_dir} has no images ({extensions}): add image files under {split_dir}/<class>/")
    return classes, samples


def _scan_eval_dir(split_dir: Path, train_classes: tuple[str, ...]) -> list[tuple[str, int]] | None:
    if not split_dir.is_dir():
        return None
    classes, samples = _scan_split_dir(split_dir)
    if classes != train_classes:
        missing = sorted(set(train_classes) - set(classes))
        extra = sorted(set(classes) - set(train_classes))
        raise HvitError(
            f"{split_dir} class folders differ from train/ (missing: {', '.join(missing) or '-'}; "
            f"extra: {', '.join(extra) or '-'}): give it the same class folders as train/"
        )
    return samples


def _image_mode(path: str) -> str:
    """The image's mode from its header; no pixel decoding."""
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HvitError(f"cannot read image {path} ({_reason(exc)}): fix or delete the file") from exc


def _decode_image(path: str, *, size: int) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 resized pixels, and whether the source was grayscale."""
    try:
        with Image.open(path) as image:
            gray = image.mode in _GRAY_MODES
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HvitError(f"cannot read image {path} ({_reason(exc)}): fix or delete the file") from exc
    return np.asarray(rgb, dtype=np.uint8), gray


def _decode_samples(samples: Sequence[tuple[str, int]], *, size: int) -> tuple[np.ndarray, torch.Tensor, bool]:
    decoded = [_decode_image(path, size=size) for path, _ in samples]
    pixels = np.stack([rgb for rgb, _ in decoded])  # (N, H, W, 3)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return pixels, labels, all(gray for _, gray in decoded)


def _folder_split(pixels: np.ndarray, labels: torch.Tensor, *, gray: bool) -> Split:
    images = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))  # (N, 3, H, W)
    if gray:
        images = images[:, :1].contiguous()  # L -> RGB copied the channel; keep one
    return Split(images=images, labels=labels)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, accumulated in float64 chunks."""
    total = images.shape[0] * images.shape[2] * images.shape[3]
    sums = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(sums)
    for chunk in images.split(1024):
        x = chunk.to(torch.float64) / 255
        sums += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    mean = sums / total
    # A floor keeps normalization finite for constant-colour data.
    std = (squares / total - mean**2).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


# --------------------------------------------------------------------------- loaders


def make_loaders(splits: DatasetSplits, config: DataConfig, *, device: torch.device, seed: int) -> Loaders:
    """Batch iterators over ``splits`` that yield normalized batches on ``device``.

    ``config.loader`` picks the kind; "auto" means "device" when ``device`` is
    CUDA, else "cpu". Both kinds share normalization and MixUp/CutMix, so with
    ``augment="none"`` they yield identical images. All randomness derives from
    ``seed``: the same seed gives the same batches.
    """
    kind = _resolve_loader_kind(config.loader, device)
    build = _make_device_loaders if kind == "device" else _make_host_loaders
    train, val, test = build(splits, config, device=device, seed=seed)
    return Loaders(train=train, val=val, test=test, kind=kind)


def _resolve_loader_kind(loader: str, device: torch.device) -> str:
    if loader == "auto":
        return "device" if device.type == "cuda" else "cpu"
    return loader


def derive_seed(seed: int, purpose: str) -> int:
    """Independent seeds per purpose, so streams seeded from one seed don't repeat each other."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:7], "big")


def _next_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (), generator=generator))


def _epoch_generator(seed: int, epoch: int, device: torch.device | None = None) -> torch.Generator:
    """A generator for one epoch's draws, seeded from (seed, epoch) alone.

    Each epoch starting afresh is what lets a resumed run draw the same batches
    as an uninterrupted one: no stream has to be replayed through earlier epochs.
    """
    return torch.Generator(device=device).manual_seed(derive_seed(seed, f"epoch {epoch}"))


class _EpochCounter:
    """The epoch a train loader draws next: 1, 2, ... unless set_epoch says otherwise."""

    next_epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.next_epoch = epoch

    def _start_epoch(self) -> int:
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        return epoch


def _seeded_call(seed: int, transform: Callable[..., Any], *args: Any) -> Any:
    """Call a torchvision v2 transform with its random draws made reproducible.

    v2 transforms draw from torch's global CPU generator; this seeds it for the
    call and restores it after, so callers' RNG state is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(*args)


def _normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 normalized; the one normalization both loader kinds use."""
    return images.float().div_(255).sub_(mean).div_(std)


def _policy(augment: str) -> v2.Transform | None:
    policies = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}
    return policies[augment]() if augment in policies else None


def _mix_transform(config: DataConfig, num_classes: int) -> v2.Transform | None:
    options: list[v2.Transform] = []
    if config.mixup_alpha > 0:
        options.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes))
    if config.cutmix_alpha > 0:
        options.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes))
    if not options:
        return None
    return options[0] if len(options) == 1 else v2.RandomChoice(options)


class _BatchFinisher:
    """Last steps for every batch, on the device: normalize, then (train) MixUp/CutMix.

    MixUp/CutMix turn int labels into (B, num_classes) soft targets.
    Their draws (lambda, box) come from a CPU generator: torchvision makes them
    on the host, and a device generator would force a sync per batch.
    """

    def __init__(self, info: DatasetInfo, *, device: torch.device, mix: v2.Transform | None, seed: int) -> None:
        self.mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.mix = mix
        self.seed = derive_seed(seed, "mix")
        self.reseed(1)

    def reseed(self, epoch: int) -> None:
        self.generator = _epoch_generator(self.seed, epoch)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _normalize(images, self.mean, self.std)
        if self.mix is None:
            return x, labels
        return _seeded_call(_next_seed(self.generator), self.mix, x, labels)


def _finishers(
    splits: DatasetSplits, config: DataConfig, *, device: torch.device, seed: int
) -> tuple[_BatchFinisher, _BatchFinisher]:
    """(train finisher with mixing, eval finisher without)."""
    mix = _mix_transform(config, splits.info.num_classes)
    train = _BatchFinisher(splits.info, device=device, mix=mix, seed=seed)
    return train, _BatchFinisher(splits.info, device=device, mix=None, seed=seed)


def _train_batch_size(config: DataConfig, num_samples: int) -> int:
    # A split smaller than one batch still gives one (full) batch per epoch.
    return max(1, min(config.batch_size, num_samples))


# --------------------------------------------------------------------------- cpu loader


class _TensorDataset(Dataset):
    """uint8 samples; train keys are (index, seed) pairs.

    A per-sample seed (drawn by the sampler in the main process) makes each
    sample's augmentation reproducible whatever the number of workers.
    """

    def __init__(self, split: Split, *, transform: v2.Transform | None = None) -> None:
        self.images, self.labels, self.transform = split.images, split.labels, transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            index = key[0] if isinstance(key, tuple) else key
            return self.images[index], self.labels[index]
        index, seed = key
        return _seeded_call(seed, self.transform, self.images[index]), self.labels[index]


class _SeededShuffleSampler(Sampler):
    """One epoch's permutation and one augmentation seed per sample, from that epoch's generator."""

    def __init__(self, num_samples: int, *, seed: int) -> None:
        self.num_samples, self.seed = num_samples, seed
        self.epoch = 1  # set by _HostLoader before each pass

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = _epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        seeds = torch.randint(2**62, (self.num_samples,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist()))


class _HostLoader(_EpochCounter):
    """DataLoader batches, moved to the device and finished there."""

    def __init__(self, batches: DataLoader, *, device: torch.device, finish: _BatchFinisher, num_samples: int) -> None:
        self.batches, self.device, self.finish, self.num_samples = batches, device, finish, num_samples

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._start_epoch()
        if isinstance(self.batches.sampler, _SeededShuffleSampler):
            self.batches.sampler.epoch = epoch  # read when the DataLoader starts the pass, just below
        self.finish.reseed(epoch)
        for images, labels in self.batches:
            # non_blocking pays off with pinned memory: the copy overlaps compute.
            yield self.finish(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))


def _sample_transform(augment: str, info: DatasetInfo) -> v2.Transform | None:
    """Per-sample train augmentation on a uint8 (C, H, W) tensor: crop, flip, policy."""
    if augment == "none":
        return None
    steps: list[v2.Transform] = [v2.RandomCrop(info.image_size, padding=CROP_PADDING)]
    if info.hflip:
        steps.append(v2.RandomHorizontalFlip())
    policy = _policy(augment)
    if policy is not None:
        steps.append(policy)
    return v2.Compose(steps)


def _make_host_loaders(
    splits: DatasetSplits, config: DataConfig, *, device: torch.device, seed: int
) -> tuple[_HostLoader, _HostLoader, _HostLoader]:
    train_finish, eval_finish = _finishers(splits, config, device=device, seed=seed)
    pin = device.type == "cuda"
    train_data = _TensorDataset(splits.train, transform=_sample_transform(config.augment, splits.info))
    train_batches = DataLoader(
        train_data,
        batch_size=_train_batch_size(config, len(splits.train)),
        sampler=_SeededShuffleSampler(len(splits.train), seed=derive_seed(seed, "shuffle")),
        drop_last=True,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(derive_seed(seed, "workers")),  # worker base seeds
    )
    train = _HostLoader(train_batches, device=device, finish=train_finish, num_samples=len(splits.train))

    def eval_loader(split: Split) -> _HostLoader:
        # No per-sample work to spread, so no workers (and no idle processes).
        batches = DataLoader(_TensorDataset(split), batch_size=config.batch_size, shuffle=False, pin_memory=pin)
        return _HostLoader(batches, device=device, finish=eval_finish, num_samples=len(split))

    return train, eval_loader(splits.val), eval_loader(splits.test)


# --------------------------------------------------------------------------- device loader


def _random_crop_flip(
    images: torch.Tensor, *, pad: int, hflip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch, plus a per-sample mirror.

    Same distribution as v2.RandomCrop(padding=pad) then RandomHorizontalFlip:
    offsets uniform in 0..2*pad on each axis, flip with probability 0.5. One
    gather, no Python loop over samples. (B, C, H, W) -> (B, C, H, W).
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p), zeros
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=device, generator=generator)
    columns = torch.arange(w, device=device).expand(b, w)
    if hflip:
        flip = torch.rand((b, 1), device=device, generator=generator) < 0.5
        columns = torch.where(flip, columns.flip(1), columns)  # a mirror reads columns right to left
    rows = dy + torch.arange(h, device=device)  # (B, H)
    columns = dx + columns  # (B, W)
    batch = torch.arange(b, device=device).view(b, 1, 1, 1)
    channels = torch.arange(c, device=device).view(1, c, 1, 1)
    return padded[batch, channels, rows.view(b, 1, h, 1), columns.view(b, 1, 1, w)]


class _DeviceAugment:
    """Batched train augmentation on the device.

    Crop offsets and flips are per sample, from one generator on the device.
    TrivialAugment/RandAugment run per chunk of POLICY_CHUNK samples (one op
    and magnitude per chunk, as torchvision draws one per call), seeded from a
    host generator: torchvision draws them on the host, and a device generator
    would need a sync per batch.
    """

    def __init__(self, info: DatasetInfo, augment: str, *, device: torch.device, seed: int) -> None:
        self.hflip = info.hflip
        self.policy = _policy(augment)
        self.device = device
        self.seeds = (derive_seed(seed, "device-augment"), derive_seed(seed, "policy"))
        self.reseed(1)

    def reseed(self, epoch: int) -> None:
        self.generator = _epoch_generator(self.seeds[0], epoch, self.device)
        self.host_generator = _epoch_generator(self.seeds[1], epoch)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = _random_crop_flip(images, pad=CROP_PADDING, hflip=self.hflip, generator=self.generator)
        if self.policy is None:
            return images
        chunks = images.split(POLICY_CHUNK)
        return torch.cat([_seeded_call(_next_seed(self.host_generator), self.policy, part) for part in chunks])


class _DeviceLoader(_EpochCounter):
    """Batches cut from a split held on the device (moved there once)."""

    def __init__(
        self,
        split: Split,
        *,
        device: torch.device,
        batch_size: int,
        finish: _BatchFinisher,
        shuffle_seed: int | None = None,
        augment: _DeviceAugment | None = None,
    ) -> None:
        self.images, self.labels = split.images.to(device), split.labels.to(device)
        self.num_samples, self.batch_size = len(split), batch_size
        self.finish, self.augment = finish, augment
        self.shuffle_seed = shuffle_seed  # train loaders shuffle, and drop the last partial batch

    def __len__(self) -> int:
        if self.shuffle_seed is not None:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        epoch = self._start_epoch()
        self.finish.reseed(epoch)
        if self.augment is not None:
            self.augment.reseed(epoch)
        if self.shuffle_seed is None:
            order = torch.arange(self.num_samples, device=device)
        else:
            generator = _epoch_generator(self.shuffle_seed, epoch, device)
            order = torch.randperm(self.num_samples, device=device, generator=generator)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images)
            yield self.finish(images, self.labels[index])


def _make_device_loaders(
    splits: DatasetSplits, config: DataConfig, *, device: torch.device, seed: int
) -> tuple[_DeviceLoader, _DeviceLoader, _DeviceLoader]:
    train_finish, eval_finish = _finishers(splits, config, device=device, seed=seed)
    augment = None
    if config.augment != "none":
        augment = _DeviceAugment(splits.info, config.augment, device=device, seed=seed)
    train = _DeviceLoader(
        splits.train,
        device=device,
        batch_size=_train_batch_size(config, len(splits.train)),
        finish=train_finish,
        shuffle_seed=derive_seed(seed, "shuffle"),
        augment=augment,
    )
    val, test = (
        _DeviceLoader(split, device=device, batch_size=config.batch_size, finish=eval_finish)
        for split in (splits.val, splits.test)
    )
    return train, val, test
