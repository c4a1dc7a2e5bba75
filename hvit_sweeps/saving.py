"""What a run keeps between epochs: its best epoch, the checkpoints it writes, and where a resume starts.

The file format itself is :mod:`hvit_sweeps.checkpoint`; this module decides
what goes into a run's checkpoints and reads a run's progress back out of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from hvit_sweeps.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from hvit_sweeps.config import TrainConfig
from hvit_sweeps.errors import HvitError

__all__ = ["Best", "Saver", "restore_progress", "saved_best_weights"]


class Best:
    """The best epoch so far by the monitored metric, with a copy of its weights."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] | None = None

    @classmethod
    def restore(cls, mode: str, saved: dict[str, Any]) -> Best:
        best = cls(mode)
        best.epoch = int(saved.get("epoch", 0))
        best.metrics = dict(saved.get("metrics", {}))
        return best

    def update(self, epoch: int, metrics: dict[str, float], monitor: str, model: nn.Module) -> bool:
        value = metrics[monitor]
        if self.metrics and self.mode != "last":  # "last": a final model keeps its last epoch
            previous = self.metrics[monitor]
            if (value <= previous) if self.mode == "max" else (value >= previous):
                return False
        self.epoch, self.metrics = epoch, dict(metrics)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metrics": self.metrics}


@dataclass
class Saver:
    """Writes checkpoints that carry everything ``--resume`` needs."""

    model: nn.Module
    config: TrainConfig
    class_names: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def save(
        self,
        path: Path | None,
        *,
        epoch: int,
        metrics: dict[str, float],
        history: list,
        best: Best,
        resumable: bool = True,
    ) -> None:
        """Write the model as it is now; ``resumable=False`` leaves out the optimizer state (a third of the bytes)."""
        if path is None:
            return
        # The history is kept either way: a few numbers per epoch, and the curves need them.
        training_state: dict[str, Any] = {"history": history, "best": best.as_dict()}
        if resumable:
            training_state.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
            )
        save_checkpoint(
            path,
            model=self.model,
            config=self.config,
            epoch=epoch,
            metrics=metrics,
            class_names=self.class_names,
            training_state=training_state,
        )


def saved_best_weights(config: TrainConfig) -> dict[str, torch.Tensor] | None:
    """After a resume that never beat the saved best, the best weights are on disk."""
    path = config.checkpoint_path
    return load_checkpoint(path).model_state if path is not None and path.is_file() else None


def restore_progress(
    model: nn.Module, config: TrainConfig, resume: Checkpoint | None, select: Literal["best", "last"]
) -> tuple[int, list[dict[str, float]], Best]:
    """The first epoch to run, the history so far and the best epoch so far (a resumed run continues them)."""
    if resume is None:
        return 1, [], Best(config.monitor_mode if select == "best" else "last")
    _check_resumable(config, resume)
    model.load_state_dict(load_model(resume).state_dict())
    history = list(resume.training_state.get("history", []))
    return resume.epoch + 1, history, Best.restore(config.monitor_mode, resume.training_state.get("best", {}))


def _check_resumable(config: TrainConfig, checkpoint: Checkpoint) -> None:
    if checkpoint.config.model != config.model:
        raise HvitError(
            f"--resume {checkpoint.path}: it holds a different model "
            f"({checkpoint.config.model.embed_dims} dims, {checkpoint.config.model.depths} depths); "
            "drop the model flags to continue it as saved"
        )
    if checkpoint.epoch >= config.epochs:
        raise HvitError(
            f"--resume {checkpoint.path}: it already trained {checkpoint.epoch} epochs; "
            f"pass --epochs greater than {checkpoint.epoch}"
        )
    if "optimizer" not in checkpoint.training_state:
        raise HvitError(f"--resume {checkpoint.path}: it has no optimizer state (an exported model)")
