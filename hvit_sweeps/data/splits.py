"""Splitting a read dataset into train / val / test, and its content fingerprint."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hvit_sweeps.data.info import DatasetInfo
from hvit_sweeps.data.raw import Split
from hvit_sweeps.data.readers import read_raw
from hvit_sweeps.errors import HvitError

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["DatasetSplits", "Split", "load_dataset"]


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


def load_dataset(config: DataConfig, *, seed: int) -> DatasetSplits:
    """Read the dataset and split it into train / val / test.

    Order of operations: the train pool is cut to ``max_train_samples``
    (stratified), then ``val_split`` of it becomes val (stratified, unless the
    source has its own val set), then val and test are each capped at
    ``max_eval_samples``. A ``folder:`` dataset without ``test/`` uses its val
    split as the test split too. ``seed`` changes only which samples go where.
    """
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise HvitError(
            f"--data-dir {config.data_dir} is a file, not a folder: pass the folder that holds the datasets"
        )
    raw = read_raw(config)
    pool = _stratified_subset(raw.train, config.max_train_samples, seed=seed)
    if raw.val is None:
        train, val = _stratified_split(pool, config.val_split, seed=seed)
    else:
        train, val = pool, raw.val
    val = _stratified_subset(val, config.max_eval_samples, seed=seed)
    test = val if raw.test is None else _stratified_subset(raw.test, config.max_eval_samples, seed=seed)
    fingerprint = _fingerprint(raw.info.name, (train, val, test))
    return DatasetSplits(info=raw.info, train=train, val=val, test=test, fingerprint=fingerprint)


def _fingerprint(name: str, splits: Sequence[Split]) -> str:
    """sha256 over the name and every image/label byte: same data, same hash."""
    digest = hashlib.sha256(name.encode())
    for split in splits:
        for tensor in (split.images, split.labels):
            array = tensor.contiguous().numpy()
            digest.update(f"{array.dtype}{array.shape}".encode())  # so a reshape changes the hash
            digest.update(array.data)
    return digest.hexdigest()[:16]


def _take(split: Split, indices: torch.Tensor) -> Split:
    return Split(images=split.images[indices], labels=split.labels[indices])


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
    for cls, count in zip(labels.unique().tolist(), counts, strict=False):
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
