"""``folder:PATH``: any ImageFolder tree with ``train/`` and optional ``val/`` and ``test/``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tv_datasets

from hvit_sweeps.data.catalog import FOLDER_PREFIX
from hvit_sweeps.data.info import DatasetInfo
from hvit_sweeps.data.raw import RawDataset, Split, reason
from hvit_sweeps.errors import HvitError

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["DEFAULT_FOLDER_IMAGE_SIZE", "describe_folder", "read_folder"]

DEFAULT_FOLDER_IMAGE_SIZE = 32

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


def _folder_root(dataset: str) -> Path:
    return Path(dataset[len(FOLDER_PREFIX) :].strip()).expanduser().resolve()


def describe_folder(dataset: str, image_size: int | None) -> DatasetInfo:
    """Facts from the class folders and image headers; mean/std are placeholders until the pixels are read."""
    tree = _scan_folder_tree(_folder_root(dataset))
    channels = 1 if all(_image_mode(path) in _GRAY_MODES for path, _ in tree.all_samples()) else 3
    return _folder_info(tree, image_size, channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)


def _folder_info(
    tree: _FolderTree, image_size: int | None, *, channels: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> DatasetInfo:
    return DatasetInfo(
        name=f"{FOLDER_PREFIX}{tree.root}",
        num_classes=len(tree.classes),
        channels=channels,
        image_size=image_size or DEFAULT_FOLDER_IMAGE_SIZE,
        class_names=tree.classes,
        mean=mean,
        std=std,
        synthetic=False,
        hflip=True,
    )


def read_folder(config: DataConfig) -> RawDataset:
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
    info = _folder_info(tree, config.image_size, channels=1 if gray else 3, mean=mean, std=std)
    return RawDataset(info=info, train=splits["train"], test=splits.get("test"), val=splits.get("val"))


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
        raise HvitError(f"cannot read image {path} ({reason(exc)}): fix or delete the file") from exc


def _decode_image(path: str, *, size: int) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 resized pixels, and whether the source was grayscale."""
    try:
        with Image.open(path) as image:
            gray = image.mode in _GRAY_MODES
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise HvitError(f"cannot read image {path} ({reason(exc)}): fix or delete the file") from exc
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
