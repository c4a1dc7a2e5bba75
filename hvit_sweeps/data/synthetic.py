"""Random CIFAR-100-shaped data that a model can still learn: runs without any download."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from hvit_sweeps.data.describe import describe_dataset
from hvit_sweeps.data.raw import RawDataset, Split

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["read_synthetic"]

# Fixed, so the synthetic data is the same for every run and every split seed.
_SYNTHETIC_SEED = 1234
_SYNTHETIC_TRAIN, _SYNTHETIC_TEST = 50_000, 10_000


def read_synthetic(config: DataConfig) -> RawDataset:
    """Random CIFAR-100-shaped data that a model can still learn.

    Each class has a fixed low-frequency colour template (4x4 noise upsampled to
    32x32); an image is ``128 + 60 * template + 40 * noise``. Only as many
    images as the caps allow are generated.
    """
    info = describe_dataset(config)
    templates = _synthetic_templates(info.num_classes, size=info.image_size)
    n_train = min(_SYNTHETIC_TRAIN, config.max_train_samples or _SYNTHETIC_TRAIN)
    n_test = min(_SYNTHETIC_TEST, config.max_eval_samples or _SYNTHETIC_TEST)
    train = _synthetic_split(templates, n_train, seed=_SYNTHETIC_SEED + 1)
    test = _synthetic_split(templates, n_test, seed=_SYNTHETIC_SEED + 2)
    return RawDataset(info=info, train=train, test=test)


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
