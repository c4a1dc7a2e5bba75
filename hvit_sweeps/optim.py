"""The optimizer and learning-rate schedule of a run, and their restore on resume."""

from __future__ import annotations

import math

import torch
from torch import nn

from hvit_sweeps.checkpoint import Checkpoint
from hvit_sweeps.config import OptimConfig

__all__ = ["make_optimizer", "make_schedule", "restore_optimization"]


def make_optimizer(
    model: nn.Module, optim: OptimConfig, device: torch.device, *, capturable: bool
) -> torch.optim.AdamW:
    """AdamW without decay on norms, biases and position embeddings (the usual ViT rule)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith("pos_embed") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # A tensor lr lets the schedule change it without re-capturing a CUDA graph.
    lr: float | torch.Tensor = torch.tensor(optim.lr, device=device) if capturable else optim.lr
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=(optim.beta1, optim.beta2),
        fused=device.type == "cuda",
        capturable=capturable,
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak lr, then cosine decay to ``min_lr_ratio`` of it."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, round(optim.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def restore_optimization(
    resume: Checkpoint,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    """Continue AdamW, the schedule and the loss scaler where ``resume`` left them."""
    optimizer.load_state_dict(resume.training_state["optimizer"])
    scheduler.load_state_dict(resume.training_state["scheduler"])
    scaler.load_state_dict(resume.training_state["scaler"])
    # The loaded lr belongs to the old run's length; recompute it for this one.
    scheduler.last_epoch -= 1
    scheduler.step()
