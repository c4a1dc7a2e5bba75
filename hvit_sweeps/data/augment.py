"""Train augmentation: per-sample transforms (cpu loader), batched crop/flip on the device, policies, MixUp/CutMix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from hvit_sweeps.data.info import DatasetInfo
from hvit_sweeps.data.seeding import (
    derive_seed,
    epoch_generator,
    next_seed,
    seeded_call,
)

if TYPE_CHECKING:
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["CROP_PADDING", "POLICY_CHUNK", "DeviceAugment", "mix_transform", "sample_transform"]

CROP_PADDING = 4
# TrivialAugment / RandAugment draw one op per call; on the device path a call
# covers this many samples, trading per-sample randomness for speed.
POLICY_CHUNK = 16


def _policy(augment: str) -> v2.Transform | None:
    policies = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}
    return policies[augment]() if augment in policies else None


def mix_transform(config: DataConfig, num_classes: int) -> v2.Transform | None:
    """MixUp, CutMix, or a random choice of the two per batch; None when both alphas are 0."""
    options: list[v2.Transform] = []
    if config.mixup_alpha > 0:
        options.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes))
    if config.cutmix_alpha > 0:
        options.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes))
    if not options:
        return None
    return options[0] if len(options) == 1 else v2.RandomChoice(options)


def sample_transform(augment: str, info: DatasetInfo) -> v2.Transform | None:
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


def _random_crop_flip(images: torch.Tensor, *, pad: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
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


class DeviceAugment:
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
        self.generator = epoch_generator(self.seeds[0], epoch, self.device)
        self.host_generator = epoch_generator(self.seeds[1], epoch)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = _random_crop_flip(images, pad=CROP_PADDING, hflip=self.hflip, generator=self.generator)
        if self.policy is None:
            return images
        chunks = images.split(POLICY_CHUNK)
        return torch.cat([seeded_call(next_seed(self.host_generator), self.policy, part) for part in chunks])
