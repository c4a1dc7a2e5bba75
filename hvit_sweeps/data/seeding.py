"""Seeds for every random stream of the loaders and augmentations.

A module of its own because both :mod:`~hvit_sweeps.data.augment` and
:mod:`~hvit_sweeps.data.loaders` draw from these streams, and the loaders
import the augmentations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["derive_seed", "epoch_generator", "next_seed", "seeded_call"]


def derive_seed(seed: int, purpose: str) -> int:
    """Independent seeds per purpose, so streams seeded from one seed don't repeat each other."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:7], "big")


def next_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (), generator=generator))


def epoch_generator(seed: int, epoch: int, device: torch.device | None = None) -> torch.Generator:
    """A generator for one epoch's draws, seeded from (seed, epoch) alone.

    Each epoch starting afresh is what lets a resumed run draw the same batches
    as an uninterrupted one: no stream has to be replayed through earlier epochs.
    """
    return torch.Generator(device=device).manual_seed(derive_seed(seed, f"epoch {epoch}"))


def seeded_call(seed: int, transform: Callable[..., Any], *args: Any) -> Any:
    """Call a torchvision v2 transform with its random draws made reproducible.

    v2 transforms draw from torch's global CPU generator; this seeds it for the
    call and restores it after, so callers' RNG state is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(*args)
