"""The trial objective: one Optuna trial is one call of :func:`~hvit_sweeps.train.train`.

Each trial gets its own MLflow child run. Its epochs are logged there and
reported to Optuna, which may prune it; its end state is tagged on the run, and
its best checkpoint uploaded unless ``keep_top_k`` says it is not among the best.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hvit_sweeps.callbacks import Callback, EpochReport, TrainResult
from hvit_sweeps.checkpoint import Checkpoint, load_checkpoint
from hvit_sweeps.config import TrainConfig
from hvit_sweeps.console import console
from hvit_sweeps.cost import device_basis
from hvit_sweeps.data import DatasetSplits
from hvit_sweeps.keys import (
    ATTR_COST,
    ATTR_DEVICE,
    ATTR_EPOCH,
    ATTR_EPOCHS,
    ATTR_HEARTBEAT,
    ATTR_HOST,
    ATTR_PID,
    ATTR_RUN_ID,
    ATTR_SURPLUS,
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    FAILURE_FILE,
    TAG_CHECKPOINT,
    TAG_COST_BASIS,
    TAG_DATASET,
    TAG_DATASET_HASH,
    TAG_FAILURE,
    TAG_HOST,
    TAG_NOTES,
    TAG_PRUNED_AT,
    TAG_RETRY_OF,
    TAG_STOP_REASON,
    TAG_VISUALS,
    VISUALS_DIR,
    best_metric,
    cost_metric,
    dataset_size_param,
    model_metric,
)
from hvit_sweeps.metrics import objectives, summarised
from hvit_sweeps.study import StudySpec
from hvit_sweeps.sweep.prune import prune_first_objective
from hvit_sweeps.sweep.record import StudyRecord
from hvit_sweeps.sweep.resume import (
    TAG_CODE,
    TAG_RESUME,
    TAG_TRAINED_EPOCHS,
    EpochCheckpointUpload,
    code_fingerprint,
    drop_resume_checkpoints,
    find_resume_point,
    replay_done_epochs,
)
from hvit_sweeps.sweep.state import Connected, Sweep, SweepDisplay, best_trials
from hvit_sweeps.sweep.storage import MAX_RETRIES, retry_trial, trial_id
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.train import train
from hvit_sweeps.visuals import log_visuals, write_checkpoint_visuals

__all__ = [
    "MAX_RETRIES",
    "SurplusTrial",
    "TrialObjective",
    "TrialReporter",
    "checkpoint_ranking",
    "log_best_visuals",
    "queue_retry",
]


class SurplusTrial(Exception):
    """Raised for a trial asked for after the target was already reached by others."""


class TrialReporter(Callback):
    """Logs each epoch to MLflow, reports it to Optuna, and stops pruned trials."""

    def __init__(self, trial: optuna.Trial, run_id: str, tracker: Tracker, spec: StudySpec) -> None:
        self.trial, self.run_id, self.tracker, self.spec = trial, run_id, tracker, spec

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.tracker.log_metrics(self.run_id, report.metrics, step=report.epoch)
        self.trial.set_user_attr(ATTR_EPOCH, report.epoch)
        self.trial.set_user_attr(ATTR_HEARTBEAT, time.time())
        metric = self.spec.objectives[0].metric
        if metric not in objectives("epoch"):
            return None  # a size or cost objective has no per-epoch value to prune on
        if self.spec.multi_objective:  # Optuna refuses trial.report here: our own rule on the first objective
            maximize = self.spec.directions[0] == "maximize"
            reason = prune_first_objective(
                self.trial, self.spec.pruner, epoch=report.epoch, value=report.metrics[metric], maximize=maximize
            )
        else:
            self.trial.report(report.metrics[metric], report.epoch)
            reason = None
            if self.trial.should_prune():
                reason = f"pruned by the {self.spec.pruner.type} pruner at epoch {report.epoch}"
        return reason


@dataclass
class TrialObjective:
    """The Optuna objective: one trial is one call of :func:`~hvit_sweeps.train.train`."""

    sweep: Sweep
    connected: Connected
    splits: DatasetSplits
    display: SweepDisplay | None = None

    last_number: int = -1
    tracking_down: bool = False  # set when a trial failed because the MLflow server stopped answering
    last_error: BaseException | None = None  # why the last trial failed; the worker decides whether to go on

    def __call__(self, trial: optuna.Trial) -> list[float]:
        self.last_error = None
        try:
            return self._run_trial(trial)
        except (optuna.TrialPruned, SurplusTrial):
            raise  # ordinary ends of a trial: no need to ask the tracking server
        except Exception as err:
            # Optuna records the trial as FAIL either way; the worker stops the sweep on this.
            self.last_error = err
            self.tracking_down = not self.sweep.tracker.reachable()
            raise

    def _run_trial(self, trial: optuna.Trial) -> list[float]:
        study = self.connected.study
        self.last_number = trial.number
        retry_of = _retry_of(self.connected, trial.number)
        if self._surplus(trial, retry_of):
            trial.set_user_attr(ATTR_SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number} is beyond the study's target")
        sampled = self.sweep.spec.suggest(trial)
        with tempfile.TemporaryDirectory(prefix="hvit-trial-") as tmp:
            # save_final: a resumable checkpoint after every epoch, uploaded for a retry (sweep/resume.py).
            layer = {**self.sweep.cli, "checkpoint_path": str(Path(tmp) / CHECKPOINT_FILE), "save_final": True}
            config = self.sweep.spec.trial_config(sampled, layer, info=self.splits.info)
            run_id = self._start_run(trial, config, retry_of)
            resume = self._resume_point(trial, retry_of, config, run_id)
            assert config.last_checkpoint_path is not None
            upload = EpochCheckpointUpload(self.sweep.tracker, run_id, config.last_checkpoint_path)
            reporter = TrialReporter(trial, run_id, self.sweep.tracker, self.sweep.spec)
            callbacks: list[Callback] = [upload, reporter]  # uploaded before Optuna hears of the epoch
            if self.display is not None:
                callbacks.append(self.display.trial_callback(study, trial.number))
            try:
                result = train(config, callbacks=callbacks, splits=self.splits, best_checkpoint="at_end", resume=resume)
            except KeyboardInterrupt:
                # Optuna records the trial as FAIL; its config is queued to run again, first, in the next process.
                queued = queue_retry(self.connected, trial.number)
                reason = "interrupted (Ctrl-C or SIGTERM); " + (
                    "queued to run again with the same params"
                    if queued
                    else f"not retried: stopped {MAX_RETRIES} times"
                )
                self.sweep.tracker.end_trial(run_id, trial.number, "INTERRUPTED", tags={TAG_FAILURE: reason})
                raise
            except BaseException as err:
                self._fail(run_id, trial.number, err)
                raise
            self.sweep.tracker.set_tag(run_id, TAG_TRAINED_EPOCHS, ",".join(map(str, upload.trained)))
            self._drop_resume_checkpoints(run_id, retry_of)
            return self._finish(trial, run_id, result, config.checkpoint_path)

    def _drop_resume_checkpoints(self, run_id: str, retry_of: int | None) -> None:
        """The trial has ended (and with it the one it retried): their resumable checkpoints are not needed."""
        runs = [run_id]
        if retry_of is not None:
            storage = self.connected.storage
            original = storage.get_trial(trial_id(storage, self.connected.study, retry_of)).user_attrs.get(ATTR_RUN_ID)
            runs += [original] if original else []
        drop_resume_checkpoints(self.sweep.tracker, runs)

    def _resume_point(
        self, trial: optuna.Trial, retry_of: int | None, config: TrainConfig, run_id: str
    ) -> Checkpoint | None:
        """For a retry: its original's checkpoint, with the done epochs given to Optuna and MLflow; else None."""
        tracker = self.sweep.tracker
        tracker.set_tag(run_id, TAG_CODE, code_fingerprint())
        if retry_of is None:
            return None
        storage = self.connected.storage
        original = storage.get_trial(trial_id(storage, self.connected.study, retry_of))
        point = find_resume_point(tracker, original, config)
        tracker.set_tag(run_id, TAG_RESUME, point.reason)
        console.print(f"trial {trial.number}: {point.reason}")
        if point.checkpoint is not None:
            replay_done_epochs(trial, original, point.checkpoint, tracker, run_id)
        return point.checkpoint

    def _surplus(self, trial: optuna.Trial, retry_of: int | None) -> bool:
        if retry_of is not None:
            return False  # a retry of a dead worker's trial always runs
        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ahead = [t for t in self.connected.study.get_trials(deepcopy=False, states=alive) if t.number < trial.number]
        return len(ahead) >= self.connected.target

    def _start_run(self, trial: optuna.Trial, config: TrainConfig, retry_of: int | None) -> str:
        tags = {
            TAG_DATASET: self.splits.info.label,
            TAG_DATASET_HASH: self.splits.fingerprint,
            TAG_HOST: socket.gethostname(),
            **({TAG_RETRY_OF: str(retry_of)} if retry_of is not None else {}),
        }
        run_id = self.sweep.tracker.start_trial(
            experiment_id=self.connected.experiment_id,
            parent_run_id=self.connected.parent_run_id,
            study_name=self.sweep.study_name,
            trial_number=trial.number,
            config=config,
            sampled=self.sweep.spec.tracked_params(trial.params),  # Optuna's names, every one of them
            tags=tags,
        )
        self.sweep.tracker.log_params(run_id, {dataset_size_param(k): v for k, v in self.splits.sizes.items()})
        for key, value in {
            ATTR_RUN_ID: run_id,
            ATTR_HOST: socket.gethostname(),
            ATTR_PID: os.getpid(),
            ATTR_HEARTBEAT: time.time(),
            ATTR_EPOCH: 0,
            ATTR_EPOCHS: config.epochs,
        }.items():
            trial.set_user_attr(key, value)
        return run_id

    def _fail(self, run_id: str, number: int, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}"[:1000]
        tracker = self.sweep.tracker
        try:
            tracker.log_text(run_id, "".join(traceback.format_exception(err)), FAILURE_FILE)
            tracker.end_trial(run_id, number, "FAIL", tags={TAG_FAILURE: reason})
        except Exception:  # noqa: BLE001 - the tracking server is gone too: `run --resume` closes the run
            pass

    def _finish(self, trial: optuna.Trial, run_id: str, result: TrainResult, checkpoint: Path | None) -> list[float]:
        tracker = self.sweep.tracker
        final = {
            **{model_metric(k): v for k, v in result.model_stats.items()},
            # lr or speed at the best epoch would read as "the best lr": the epoch says which it was.
            **{best_metric(k): v for k, v in result.best_metrics.items() if k in summarised()},
            best_metric("epoch"): float(result.best_epoch),
            **result.test_metrics,
            **{cost_metric(k): v for k, v in result.cost.items()},
        }
        tracker.log_summary(run_id, final, charted=self.sweep.spec.charted_summaries(), step=result.epochs_run)
        trial.set_user_attr(ATTR_COST, result.cost)  # read by budgets, packing and `show` without MLflow
        trial.set_user_attr(ATTR_DEVICE, result.cost_device)
        tags = {TAG_NOTES: "; ".join(result.notes)} if result.notes else {}
        tags[TAG_COST_BASIS] = device_basis(result.cost_device)
        if result.status != "completed":
            tags.update({TAG_STOP_REASON: result.reason, TAG_PRUNED_AT: str(result.epochs_run)})
            tracker.end_trial(run_id, trial.number, "PRUNED", tags=tags)
            raise optuna.TrialPruned(result.reason)
        values = self.sweep.spec.objective_values({**result.best_metrics, **result.model_stats, **result.cost})
        kept = self._keep_checkpoint(trial, run_id, values, checkpoint)
        tags[TAG_CHECKPOINT] = "kept" if kept else "not kept (keep_top_k)"
        tracker.end_trial(run_id, trial.number, "COMPLETE", tags=tags)
        return values

    def _keep_checkpoint(self, trial: optuna.Trial, run_id: str, values: list[float], checkpoint: Path | None) -> bool:
        """Upload the trial's best checkpoint unless keep_top_k says it is not among the best."""
        top_k = self.sweep.spec.keep_top_k
        if checkpoint is None or not checkpoint.is_file():
            return False
        if top_k is None or self.sweep.spec.multi_objective:
            self.sweep.tracker.log_file(run_id, checkpoint, CHECKPOINT_DIR)
            return True
        ranked = checkpoint_ranking(StudyRecord.of(self.connected.study), trial.number, run_id, values)
        keep = {rid for _, rid in ranked[:top_k]}
        if run_id not in keep:
            return False
        self.sweep.tracker.log_file(run_id, checkpoint, CHECKPOINT_DIR)
        for _, other in ranked[top_k:]:
            if other and other != run_id:
                self.sweep.tracker.delete_checkpoint(other)
                self.sweep.tracker.set_tag(other, TAG_CHECKPOINT, "deleted (keep_top_k)")
        return True


def checkpoint_ranking(
    record: StudyRecord, number: int, run_id: str, values: Sequence[float]
) -> list[tuple[int, str | None]]:
    """(trial number, run id) of the complete trials and trial ``number`` (not stored as complete yet), best first.

    The order is :meth:`StudyRecord.rank`'s, as everywhere; ``keep_top_k`` keeps the first k checkpoints.
    """
    runs: dict[int, str | None] = {t.number: t.user_attrs.get(ATTR_RUN_ID) for t in record.complete}
    scores: dict[int, Sequence[float]] = {t.number: t.values for t in record.complete}
    runs[number], scores[number] = run_id, values
    return [(n, runs[n]) for n in record.rank(scores)]


def queue_retry(connected: Connected, number: int) -> bool:
    """Queue stopped trial ``number`` to run again with the same params, as a dead worker's trial is."""
    storage = connected.storage
    return retry_trial(connected.study, storage.get_trial(trial_id(storage, connected.study, number)))


def _retry_of(connected: Connected, number: int) -> int | None:
    """The dead trial that trial ``number`` retries (set by RetryHeartbeatStaleTrialCallback), if any."""
    storage = connected.storage
    frozen = storage.get_trial(trial_id(storage, connected.study, number))
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)


def log_best_visuals(sweep: Sweep, connected: Connected, splits: DatasetSplits) -> list[int]:
    """Visuals for the best kept trials that have none yet: confusion matrix, mistakes, curves, ...

    Drawn once a worker has run its trials, not inside them: they took about 6 s a
    trial on a CPU, half of a short trial (benchmarks/RESULTS.md). The best
    ``keep_top_k`` (else 5) trials get them; `eval --visuals` draws any checkpoint's.
    """
    if not sweep.spec.visuals:
        return []
    drawn = []
    for trial in best_trials(connected.study, top=sweep.spec.keep_top_k or 5):
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if not run_id or TAG_VISUALS in sweep.tracker.run(run_id).tags:
            continue
        sweep.tracker.set_tag(run_id, TAG_VISUALS, _draw_visuals(sweep.tracker, run_id, splits))
        drawn.append(trial.number)
    return drawn


def _draw_visuals(tracker: Tracker, run_id: str, splits: DatasetSplits) -> str:
    """Draw and log one trial's visuals; a failure costs the pictures, never the sweep."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = load_checkpoint(tracker.download_checkpoint(run_id, Path(tmp)))
            out = Path(tmp) / VISUALS_DIR
            write_checkpoint_visuals(checkpoint, splits, out_dir=out)
            log_visuals(tracker, run_id, out)
    except Exception as err:  # noqa: BLE001 - pictures are optional; the trial's result stands
        return f"failed: {type(err).__name__}: {err}"[:500]
    return "logged"
