"""What a sweep is and where it stands: its definition, the opened study, and counts by state.

The other sweep modules all read these; of them only :mod:`~hvit_sweeps.sweep.record`
(the one ranking of trials) is read back here, and it reads none, so the package has
no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from hvit_sweeps.callbacks import Callback
from hvit_sweeps.config import TrainConfig
from hvit_sweeps.keys import study_metric
from hvit_sweeps.study import StudySpec
from hvit_sweeps.sweep.record import StudyRecord, count_states
from hvit_sweeps.tracking import Tracker

__all__ = ["Connected", "Sweep", "SweepDisplay", "best_trials", "best_values", "study_summary", "trial_counts"]


class SweepDisplay(Protocol):
    """What a worker tells the screen; :class:`~hvit_sweeps.console.SweepDashboard` implements it."""

    def refresh(self, study: optuna.Study) -> None: ...

    def trial_callback(self, study: optuna.Study, trial_number: int) -> Callback: ...


@dataclass
class Sweep:
    """A study definition plus where it runs; resolved and checked once per process."""

    spec: StudySpec
    spec_path: Path
    study_name: str
    storage_url: str | None
    tracking_uri: str | None
    root: Path
    cli: dict[str, Any] = field(default_factory=dict)
    heartbeat: int = 60
    tracker: Tracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.tracking_uri, root=self.root)

    @cached_property
    def base_config(self) -> TrainConfig:
        """The config with no sampled value; built once, since building it may scan a dataset folder."""
        return self.spec.trial_config({}, self.cli)


@dataclass
class Connected:
    """A study opened in its storage, with its MLflow experiment, parent run and target."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage  # what the study was opened on: Optuna keeps study._storage private
    experiment_id: str
    parent_run_id: str
    target: int


def trial_counts(study: optuna.Study) -> dict[str, int]:
    return count_states(study.get_trials(deepcopy=False))


def best_values(study: optuna.Study) -> dict[str, float]:
    """The best value and trial, or the Pareto set's size; empty before a trial completes."""
    return StudyRecord.of(study).best_values()


def study_summary(study: optuna.Study) -> tuple[dict[str, float], int]:
    """The parent run's metrics (counts and best, under ``study/``) and their step: trials finished."""
    record = StudyRecord.of(study)
    counts = record.counts
    values = {**{k: float(v) for k, v in counts.items()}, **record.best_values()}
    return {study_metric(k): v for k, v in values.items()}, counts["finished"]


def best_trials(study: optuna.Study, *, top: int) -> list[FrozenTrial]:
    """The Pareto set for multi-objective studies, else the top trials by value (:meth:`StudyRecord.best`)."""
    return StudyRecord.of(study).best(top)
