"""What a reader hands back (splits of uint8 images and labels), and the checks and error wording readers share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hvit_sweeps.errors import HvitError

if TYPE_CHECKING:
    from hvit_sweeps.data.info import DatasetInfo

__all__ = ["RawDataset", "Split", "check_labels", "reason"]


@dataclass
class Split:
    """One split in memory: uint8 images (N, C, H, W) and int64 labels (N,), on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class RawDataset:
    """What a reader returns; ``val``/``test`` are None when the source has none."""

    info: DatasetInfo
    train: Split
    test: Split | None
    val: Split | None = None


def reason(exc: BaseException) -> str:
    """An exception as one short line, for embedding in a one-line HvitError."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_labels(split: Split, num_classes: int, *, source: Path) -> None:
    if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < num_classes:
        raise HvitError(f"{source} has labels outside 0..{num_classes - 1}: replace it with the original files")
