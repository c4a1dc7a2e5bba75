"""Batch loaders: two kinds with one contract (:class:`BatchLoader`).

* ``cpu``: a :class:`torch.utils.data.DataLoader` with per-sample torchvision v2
  augmentation in worker processes; the batch is normalized on the device.
* ``device``: the whole dataset lives on the device and is augmented per batch
  there, as in airbench (Keller Jordan, 2024). No worker processes, no host
  round trips.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from hvit_sweeps.data.augment import DeviceAugment, mix_transform, sample_transform
from hvit_sweeps.data.info import DatasetInfo
from hvit_sweeps.data.seeding import (
    derive_seed,
    epoch_generator,
    next_seed,
    seeded_call,
)
from hvit_sweeps.data.splits import DatasetSplits, Split

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["BatchLoader", "Loaders", "make_loaders"]


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
    """``auto``: the device loader on CUDA and on a CPU, the worker loader elsewhere (MPS).

    On a 2-core CPU, per-image augmentation in DataLoader workers competes with training for
    the cores: the batched device path ran 1.7-3x faster (benchmarks/RESULTS.md, CPU loader).
    """
    if loader == "auto":
        return "device" if device.type in ("cuda", "cpu") else "cpu"
    return loader


class _EpochCounter:
    """The epoch a train loader draws next: 1, 2, ... unless set_epoch says otherwise."""

    next_epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.next_epoch = epoch

    def _start_epoch(self) -> int:
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        return epoch


def _normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 normalized; the one normalization both loader kinds use."""
    return images.float().div_(255).sub_(mean).div_(std)


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
        self.generator = epoch_generator(self.seed, epoch)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _normalize(images, self.mean, self.std)
        if self.mix is None:
            return x, labels
        return seeded_call(next_seed(self.generator), self.mix, x, labels)


def _finishers(
    splits: DatasetSplits, config: DataConfig, *, device: torch.device, seed: int
) -> tuple[_BatchFinisher, _BatchFinisher]:
    """(train finisher with mixing, eval finisher without)."""
    mix = mix_transform(config, splits.info.num_classes)
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
        assert isinstance(key, tuple)  # the seeded sampler yields (index, seed) whenever there is a transform
        index, seed = key
        return seeded_call(seed, self.transform, self.images[index]), self.labels[index]


class _SeededShuffleSampler(Sampler):
    """One epoch's permutation and one augmentation seed per sample, from that epoch's generator."""

    def __init__(self, num_samples: int, *, seed: int) -> None:
        self.num_samples, self.seed = num_samples, seed
        self.epoch = 1  # set by _HostLoader before each pass

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        seeds = torch.randint(2**62, (self.num_samples,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=False))


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


def _make_host_loaders(
    splits: DatasetSplits, config: DataConfig, *, device: torch.device, seed: int
) -> tuple[_HostLoader, _HostLoader, _HostLoader]:
    train_finish, eval_finish = _finishers(splits, config, device=device, seed=seed)
    pin = device.type == "cuda"
    train_data = _TensorDataset(splits.train, transform=sample_transform(config.augment, splits.info))
    train_batches = DataLoader(
        train_data,
        batch_size=_train_batch_size(config, len(splits.train)),
        sampler=_SeededShuffleSampler(len(splits.train), seed=derive_seed(seed, "shuffle")),
        drop_last=True,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(derive_seed(seed, "workers")),  # worker base seeds
        worker_init_fn=_ignore_ctrl_c,
    )
    train = _HostLoader(train_batches, device=device, finish=train_finish, num_samples=len(splits.train))

    def eval_loader(split: Split) -> _HostLoader:
        # No per-sample work to spread, so no workers (and no idle processes).
        batches = DataLoader(_TensorDataset(split), batch_size=config.batch_size, shuffle=False, pin_memory=pin)
        return _HostLoader(batches, device=device, finish=eval_finish, num_samples=len(split))

    return train, eval_loader(splits.val), eval_loader(splits.test)


def _ignore_ctrl_c(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops at a batch boundary and shuts them down.

    A terminal sends SIGINT to the whole process group; a worker that died of it
    would turn a clean stop into "DataLoader worker exited unexpectedly".
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------- device loader


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
        augment: DeviceAugment | None = None,
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
            generator = epoch_generator(self.shuffle_seed, epoch, device)
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
        augment = DeviceAugment(splits.info, config.augment, device=device, seed=seed)
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
