"""A study's final model: the best trial's config trained once more, on train plus val, then tested once.

The search chose a config by val top-1 alone and never saw the test split. The
final run takes the best complete trial's config from its checkpoint (which
holds the full resolved config), trains it on train plus val at the budget the
trials had, with a seed of its own, and keeps the last epoch's weights: with val
inside the training data there is nothing unseen left to pick an epoch by. Only
then is test evaluated, once. The run is logged as a child of the study's parent
run, registered in MLflow's model registry under an alias, and optionally
exported with a model card that says how its test figure was obtained.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
)
from optuna.trial import FrozenTrial

from hvit_sweeps.callbacks import Callback, EpochReport, TrainResult
from hvit_sweeps.checkpoint import Checkpoint, load_checkpoint
from hvit_sweeps.config import TrainConfig, build_config, flatten_config
from hvit_sweeps.data import DatasetSplits, Split, load_dataset
from hvit_sweeps.errors import HvitError, first_line
from hvit_sweeps.export import check_export_dest, staged_export
from hvit_sweeps.keys import (
    ATTR_RUN_ID,
    CHECKPOINT_DIR,
    ROLE_FINAL,
    TAG_DATASET,
    TAG_DATASET_HASH,
    TAG_FAILURE,
    TAG_HOST,
    TAG_REGISTERED,
    TAG_ROLE,
    TAG_SOURCE_RUN,
    TAG_SOURCE_TRIAL,
    TAG_STUDY,
    TAG_TRAINED_ON,
    cost_metric,
    dataset_size_param,
)
from hvit_sweeps.model_card import (
    FINAL_CHECKPOINT,
    TRAINED_ON,
    RegisteredVersion,
    RetrainResult,
    final_model_card,
    final_summary,
)
from hvit_sweeps.sweep.record import StudyRecord
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.train import train

__all__ = [
    "FINAL_CHECKPOINT",
    "RegisteredVersion",
    "RetrainResult",
    "best_complete_trial",
    "default_registry_name",
    "export_final",
    "final_config",
    "final_model_card",
    "final_summary",
    "register_final",
    "retrain_best",
    "train_plus_val",
]

# The final run's val split is inside its training data: its val figures are logged under this prefix.
SEEN_VAL_PREFIX = "seen_"


def default_registry_name(study_name: str) -> str:
    return f"hvit-{study_name}"


def retrain_best(
    study: optuna.Study,
    *,
    tracker: Tracker,
    dest: Path | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    registry_name: str | None = None,
    alias: str = "champion",
    register: bool = True,
    trial_number: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    force: bool = False,
) -> RetrainResult:
    """Train the study's best complete trial once more on train plus val, test it once, log, register, export.

    Args:
        study: A study run by hvit-sweep (its trials carry MLflow run ids).
        tracker: The tracking store the study was run with.
        dest: Export folder (checkpoint, config.json, metrics.json, MODEL_CARD.md); None exports nothing.
        seed: The final run's seed [the trial's seed + 1], so the final figure is not the search's lucky draw.
        epochs: Epoch budget [the trial's: the study's max_epochs unless the sweep overrode it].
        registry_name: Registered model name [``hvit-<study name>``].
        alias: Alias moved to the new version.
        register: False skips the model registry.
        trial_number: Retrain this complete trial instead of the best (needed for a Pareto study).
        overrides: Config paths to change for this machine, such as ``runtime.device`` or ``data.data_dir``.
        callbacks: Per-epoch hooks, e.g. a progress display.
        force: Replace the contents of a non-empty ``dest`` (else it is refused before training).
    """
    source = _SourceTrial.find(study, tracker, number=trial_number)
    name = registry_name or default_registry_name(study.study_name)
    if dest is not None:
        check_export_dest(dest, force=force)
    if register:
        _ensure_registered_model(tracker, name, study.study_name, alias)  # refusals come before any training
    with tempfile.TemporaryDirectory(prefix="hvit-final-") as tmp:
        checkpoint = Path(tmp) / FINAL_CHECKPOINT
        trial_config = _trial_checkpoint(tracker, source, Path(tmp)).config
        config = final_config(trial_config, seed=seed, epochs=epochs, overrides=overrides, checkpoint_path=checkpoint)
        result = _train_final(tracker, source, config, callbacks)
        try:
            if register:
                result = replace(result, registered=register_final(tracker, result, name=name, alias=alias))
            if dest is not None:
                result = replace(result, exported=export_final(result, checkpoint, dest, force=force))
        except BaseException as err:
            tracker.end_run(result.run_id, "FAILED", tags={TAG_FAILURE: _failure(err)})
            raise
    registered = result.registered
    tracker.end_run(
        result.run_id, "FINISHED", tags={TAG_REGISTERED: f"{name}/{registered.version}"} if registered else None
    )
    return result


# -- choosing the trial ------------------------------------------------------------------


def best_complete_trial(study: optuna.Study, *, number: int | None = None) -> FrozenTrial:
    """The best COMPLETE trial of a single-objective study, or the complete trial ``number``."""
    return StudyRecord.of(study).best_complete(number)


@dataclass(frozen=True)
class _SourceTrial:
    """The trial to retrain, its MLflow run, and the study's parent run the final run nests under."""

    study_name: str
    trial: FrozenTrial
    run_id: str
    parent_run_id: str
    experiment_id: str

    @classmethod
    def find(cls, study: optuna.Study, tracker: Tracker, *, number: int | None) -> _SourceTrial:
        record = StudyRecord.of(study)
        trial = record.best_complete(number)
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if not run_id:
            raise record.not_tracked()
        experiment_id, parent = record.runs()
        try:
            tracker.run(parent)
        except MlflowException:
            raise record.parent_missing(tracker.uri) from None
        return cls(study.study_name, trial, run_id, parent, experiment_id)


def _trial_checkpoint(tracker: Tracker, source: _SourceTrial, folder: Path) -> Checkpoint:
    """The trial's checkpoint: its config is the full resolved config the trial trained with."""
    try:
        return load_checkpoint(tracker.download_checkpoint(source.run_id, folder))
    except HvitError as err:
        raise HvitError(f"trial {source.trial.number}: {err}") from None


# -- the final training ------------------------------------------------------------------


def final_config(
    trial_config: TrainConfig,
    *,
    seed: int | None,
    epochs: int | None,
    overrides: Mapping[str, Any] | None,
    checkpoint_path: Path,
) -> TrainConfig:
    """The trial's config with the final run's seed, budget and checkpoint; test evaluated at the end.

    The budget defaults to the trial's own ``epochs``, not the parent run's
    ``study.max_epochs`` param: a sweep's ``--set epochs=N`` changes what every
    trial trained with, and only the trial's config records it.
    """
    final = {
        "seed": trial_config.seed + 1 if seed is None else seed,
        "epochs": trial_config.epochs if epochs is None else epochs,
        "evaluate_test": True,
        "save_final": False,
        "checkpoint_path": str(checkpoint_path),
    }
    return build_config(trial_config.model_dump(mode="json"), final, dict(overrides or {}), source="final model")


def train_plus_val(splits: DatasetSplits) -> DatasetSplits:
    """``splits`` with val added to train.

    Val stays as it is, because the loop evaluates it every epoch (and stops a run
    whose loss is not finite); its figures are then on seen images and are logged
    as such. Test is untouched.
    """
    merged = Split(
        images=torch.cat([splits.train.images, splits.val.images]),
        labels=torch.cat([splits.train.labels, splits.val.labels]),
    )
    # The content is fixed by the source splits, so their hash plus the merge names it.
    fingerprint = f"{splits.fingerprint}+{TRAINED_ON}"
    return DatasetSplits(info=splits.info, train=merged, val=splits.val, test=splits.test, fingerprint=fingerprint)


class _FinalRunLogger(Callback):
    """Logs each epoch to the final run, with the val figures marked as seen."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def on_epoch_end(self, report: EpochReport) -> str | None:
        metrics = {(SEEN_VAL_PREFIX + k if k.startswith("val_") else k): v for k, v in report.metrics.items()}
        self.tracker.log_metrics(self.run_id, metrics, step=report.epoch)
        return None


def _train_final(
    tracker: Tracker, source: _SourceTrial, config: TrainConfig, callbacks: Sequence[Callback]
) -> RetrainResult:
    """Load the data with val merged into train, train in a new child run of the study, upload the checkpoint."""
    started = time.monotonic()
    splits = train_plus_val(load_dataset(config.data, seed=config.seed))
    run_id = _start_final_run(tracker, source, config, splits)
    trained = _train_logged(tracker, run_id, config, splits, callbacks)
    assert config.checkpoint_path is not None  # final_config always sets it
    tracker.log_file(run_id, config.checkpoint_path, CHECKPOINT_DIR)
    return RetrainResult(
        study_name=source.study_name,
        source_trial=source.trial.number,
        source_run_id=source.run_id,
        source_value=source.trial.values[0],
        run_id=run_id,
        config=config,
        test_metrics=trained.test_metrics,
        history=trained.history,
        dataset_sizes=splits.sizes,
        seconds=time.monotonic() - started,
        registered=None,
        exported=None,
    )


def _start_final_run(tracker: Tracker, source: _SourceTrial, config: TrainConfig, splits: DatasetSplits) -> str:
    run_id = tracker.create_child_run(
        source.experiment_id,
        source.parent_run_id,
        name=f"final-trial-{source.trial.number}",
        tags={
            TAG_ROLE: ROLE_FINAL,
            TAG_STUDY: source.study_name,
            TAG_SOURCE_TRIAL: str(source.trial.number),
            TAG_SOURCE_RUN: source.run_id,
            TAG_TRAINED_ON: TRAINED_ON,
            TAG_DATASET: splits.info.label,
            TAG_DATASET_HASH: splits.fingerprint,
            TAG_HOST: socket.gethostname(),
        },
    )
    sizes = {dataset_size_param(k): v for k, v in splits.sizes.items()}
    tracker.log_params(run_id, {**flatten_config(config), **sizes})
    return run_id


def _train_logged(
    tracker: Tracker, run_id: str, config: TrainConfig, splits: DatasetSplits, callbacks: Sequence[Callback]
) -> TrainResult:
    """Train with every epoch logged; the run is closed as FAILED or KILLED if training does not finish."""
    try:
        result = train(
            config,
            callbacks=[_FinalRunLogger(tracker, run_id), *callbacks],
            splits=splits,
            best_checkpoint="at_end",
            select="last",
        )
    except KeyboardInterrupt:
        tracker.end_run(run_id, "KILLED", tags={TAG_FAILURE: "interrupted (Ctrl-C)"})
        raise
    except BaseException as err:
        tracker.end_run(run_id, "FAILED", tags={TAG_FAILURE: _failure(err)})
        raise
    if result.status != "completed" or not result.test_metrics:
        tracker.end_run(run_id, "FAILED", tags={TAG_FAILURE: result.reason})
        raise HvitError(f"the final training did not complete ({result.reason}): MLflow run {run_id}")
    cost = {cost_metric(k): v for k, v in result.cost.items()}  # the final run's cost, as a trial's
    tracker.log_metrics(run_id, {**result.model_stats, **result.test_metrics, **cost}, step=result.epochs_run)
    return result


def _failure(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:1000]


# -- the model registry ------------------------------------------------------------------


def _ensure_registered_model(tracker: Tracker, name: str, study_name: str, alias: str) -> None:
    """Create the registered model unless it exists, and check the alias: a refusal is a user error, before training."""
    try:
        # MLflow's own alias rules (3.17): checked here so that a bad alias cannot fail after training.
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException as err:
        raise HvitError(f"--alias {alias}: {first_line(err)}") from None
    try:
        tracker.create_registered_model(name, description=f"Final models of the hvit-sweep study {study_name}.")
    except MlflowException as err:
        if err.error_code == "RESOURCE_ALREADY_EXISTS":
            return
        raise HvitError(
            f"--registry-name {name}: the model registry at {tracker.uri} refused it ({first_line(err)})"
        ) from None


def register_final(tracker: Tracker, result: RetrainResult, *, name: str, alias: str) -> RegisteredVersion:
    """A new version of ``name`` from the final run's checkpoint folder, with ``alias`` moved to it.

    The source is the run-relative URI ``runs:/<run id>/checkpoint`` with the same run
    id: MLflow 3.17's server accepts exactly that pairing (handlers._validate_source_run),
    and the SQLite store keeps it as given and resolves it through the run's artifacts.
    """
    source = f"runs:/{result.run_id}/{CHECKPOINT_DIR}"
    tags = {
        TAG_STUDY: result.study_name,
        TAG_SOURCE_TRIAL: str(result.source_trial),
        TAG_TRAINED_ON: TRAINED_ON,
        "epochs": str(result.config.epochs),
        "seed": str(result.config.seed),
        **{k: repr(v) for k, v in result.test_metrics.items()},  # repr: the float round-trips exactly
    }
    description = (
        f"Study {result.study_name}, trial {result.source_trial}'s config trained on {TRAINED_ON}: "
        f"test top-1 {result.test_acc1:.4f}."
    )
    try:
        version = tracker.register_model_version(
            name, source, run_id=result.run_id, tags=tags, description=description, alias=alias
        )
    except MlflowException as err:
        raise HvitError(
            f"the model registry at {tracker.uri} refused the final model ({first_line(err)}): "
            f"its checkpoint stays in MLflow run {result.run_id}"
        ) from None
    return RegisteredVersion(name=name, version=version, alias=alias, source=source)


# -- export ------------------------------------------------------------------------------


def export_final(result: RetrainResult, checkpoint: Path, dest: Path, *, force: bool = False) -> Path:
    """Write the final model's checkpoint, config.json, metrics.json and MODEL_CARD.md into ``dest``.

    The files are written into a staging folder beside ``dest`` and renamed into
    place only when all exist, so an interrupted export leaves nothing half-written.
    """
    with staged_export(dest, force=force) as folder:
        shutil.copy2(checkpoint, folder / FINAL_CHECKPOINT)
        (folder / "config.json").write_text(json.dumps(result.config.model_dump(mode="json"), indent=2))
        (folder / "metrics.json").write_text(json.dumps(final_summary(result), indent=2, default=str))
        (folder / "MODEL_CARD.md").write_text(final_model_card(result))
    return dest
