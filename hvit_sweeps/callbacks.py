"""What the training loop tells its callbacks, and the callback base class.

Torch-free, so the commands that only read results (``show``, ``best``,
``studies``) and the console can use these types without importing torch;
:mod:`hvit_sweeps.train` re-exports them with :func:`~hvit_sweeps.train.train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hvit_sweeps.data.info import DatasetInfo

__all__ = ["Callback", "EpochReport", "RunPlan", "TrainResult"]


@dataclass(frozen=True)
class EpochReport:
    """What the loop tells callbacks after each epoch (epochs count from 1)."""

    epoch: int
    epochs: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class RunPlan:
    """What a run is about to do, told to callbacks once everything is built."""

    dataset: DatasetInfo
    sizes: dict[str, int]
    fingerprint: str
    model_stats: dict[str, float]
    device: str
    precision: str  # "fp32", "bf16 autocast" or "fp16 autocast"
    step_mode: str  # "eager", "cuda-graph" or "compile=MODE"
    epochs: int
    start_epoch: int
    batches_per_epoch: int


class Callback:
    """Per-epoch hook. Subclass and override what you need."""

    def on_phase(self, phase: str) -> None:
        """A step before the first batch: "loading data", "building model", "first batch"."""

    def on_train_start(self, plan: RunPlan) -> None:
        """What the run will do, once data and model are ready."""

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        """Called after each optimizer step; must not touch device tensors."""

    def on_epoch_end(self, report: EpochReport) -> str | None:
        """Return a reason to stop training after this epoch, or None to go on."""
        return None


@dataclass
class TrainResult:
    """How a run ended and what it reached."""

    status: Literal["completed", "stopped", "diverged"]
    reason: str
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    test_metrics: dict[str, float]
    model_stats: dict[str, float]
    dataset: DatasetInfo
    dataset_fingerprint: str
    dataset_sizes: dict[str, int]
    notes: list[str] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)  # measured: see hvit_sweeps.cost
    cost_device: str = ""  # the device type the cost was measured on: cuda, cpu, mps
