"""A retried trial continues from its original's last completed epoch.

A trial saves a resumable checkpoint (weights, optimizer, LR schedule, history)
after every epoch and uploads it to its MLflow run as ``resume/``, where a retry
on any host finds it. The retry (a copy with the same params, marked by
Optuna's ``RetryHeartbeatStaleTrialCallback``) downloads it and trains only the
remaining epochs with :func:`~hvit_sweeps.train.train`'s ``resume``; the epochs
already done are reported again to Optuna (so the pruner sees the whole curve)
and logged again to the retry's MLflow run at the same steps (so its history has
no gap and no step twice). Where that cannot be proven (no checkpoint, another
version of the code, another config), the retry starts at epoch 0 and says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException

from hvit_sweeps.callbacks import Callback, EpochReport
from hvit_sweeps.checkpoint import Checkpoint, load_checkpoint
from hvit_sweeps.config import TrainConfig
from hvit_sweeps.keys import ATTR_RUN_ID
from hvit_sweeps.tracking import Tracker

__all__ = [
    "RESUME_DIR",
    "TAG_CODE",
    "TAG_RESUME",
    "TAG_TRAINED_EPOCHS",
    "EpochCheckpointUpload",
    "ResumePoint",
    "code_fingerprint",
    "drop_resume_checkpoints",
    "find_resume_point",
    "replay_done_epochs",
]

RESUME_DIR = "resume"  # artifact folder of a trial's run: the last epoch's resumable checkpoint
TAG_CODE = "hvit.code"  # the package's source hash; a checkpoint resumes only under the same code
TAG_RESUME = "hvit.resume"  # one line: where the retry started and why
TAG_TRAINED_EPOCHS = "hvit.trained_epochs"  # the epochs this run's process trained itself


@cache
def code_fingerprint() -> str:
    """A hash of the package's Python source: two hosts with the same hash run the same training code."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class EpochCheckpointUpload(Callback):
    """After an epoch, uploads the resumable checkpoint train() just wrote (``save_final``) to the run.

    It runs before the callback that reports the epoch to Optuna, so a retry never
    resumes past what the study has seen. A checkpoint holds weights and AdamW state
    (437 MiB for depth-width's largest model), so it is uploaded only when the
    training since the last upload took at least 1/``max_share`` times as long as
    that upload did: uploads cost at most about ``max_share`` of the trial's time,
    and a retry may resume a few epochs before the last one where they are slow.
    """

    tracker: Tracker
    run_id: str
    path: Path
    max_share: float = 0.1
    trained: list[int] = field(default_factory=list)
    _since: float = field(default_factory=time.monotonic)  # when the last upload ended (or training began)
    _cost: float = 0.0  # how long the last upload took

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.trained.append(report.epoch)
        start = time.monotonic()
        if self.path.is_file() and (start - self._since) * self.max_share >= self._cost:
            self.tracker.log_file(self.run_id, self.path, RESUME_DIR)
            self._since = time.monotonic()
            self._cost = self._since - start
        return None


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint to continue from (None: start at epoch 0) and the one line that says why."""

    checkpoint: Checkpoint | None
    reason: str


def _comparable(config: TrainConfig) -> dict:
    # Machine-local paths differ between the original's host and the retry's.
    return config.model_dump(mode="json", exclude={"checkpoint_path"})


def find_resume_point(tracker: Tracker, original: optuna.trial.FrozenTrial, config: TrainConfig) -> ResumePoint:
    """Where a retry of ``original`` can start, with ``config`` as the retry's own."""
    number = original.number
    restart = f"retry of trial {number} starts at epoch 0"
    run_id = original.user_attrs.get(ATTR_RUN_ID)
    if not run_id:
        return ResumePoint(None, f"{restart}: it never started an MLflow run")
    if tracker.run(run_id).tags.get(TAG_CODE) != code_fingerprint():
        return ResumePoint(None, f"{restart}: it ran another version of the code")
    folder = Path(tempfile.mkdtemp(prefix="hvit-resume-"))
    try:
        local = tracker.download_artifacts(run_id, RESUME_DIR, folder)
    except (MlflowException, OSError):
        return ResumePoint(None, f"{restart}: it saved no resumable checkpoint")
    files = sorted(local.glob("*"))
    if not files:
        return ResumePoint(None, f"{restart}: it saved no resumable checkpoint")
    checkpoint = load_checkpoint(files[0])
    if _comparable(checkpoint.config) != _comparable(config):
        return ResumePoint(None, f"{restart}: its checkpoint holds another config")
    if "optimizer" not in checkpoint.training_state or checkpoint.epoch >= config.epochs:
        return ResumePoint(None, f"{restart}: its checkpoint cannot be continued")
    return ResumePoint(
        checkpoint, f"retry of trial {number} resumes at epoch {checkpoint.epoch + 1} from its checkpoint"
    )


def replay_done_epochs(
    trial: optuna.Trial,
    original: optuna.trial.FrozenTrial,
    checkpoint: Checkpoint,
    tracker: Tracker,
    run_id: str,
) -> None:
    """Give the retry the epochs its original finished: Optuna's intermediate values and MLflow's per-epoch metrics."""
    done = checkpoint.epoch
    for step, value in sorted(original.intermediate_values.items()):
        if step <= done:
            trial.report(value, step)  # the pruner judges the whole curve, as for any trial
    for row in checkpoint.training_state.get("history", []):
        epoch = int(row["epoch"])
        if epoch <= done:
            tracker.log_metrics(run_id, {k: float(v) for k, v in row.items() if k != "epoch"}, step=epoch)


def drop_resume_checkpoints(tracker: Tracker, run_ids: list[str]) -> None:
    """Delete the ``resume/`` artifacts of runs whose trial has ended: nothing will continue them."""
    for run_id in run_ids:
        with contextlib.suppress(MlflowException):  # a run the store no longer has: nothing to drop
            tracker.delete_artifacts(run_id, RESUME_DIR)
