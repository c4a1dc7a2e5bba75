"""Exporting a study's winners: checkpoint, config, metrics and a model card.

Files are written into a staging folder beside the destination and renamed into
place only when all of them exist, so an interrupted export leaves nothing
half-written. A folder that already holds files is never overwritten unless the
user says ``--force``; then it is replaced whole, never mixed with the new files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from hvit_sweeps.checkpoint import load_checkpoint, load_model
from hvit_sweeps.errors import HvitError
from hvit_sweeps.flags import reproduce_command
from hvit_sweeps.keys import ATTR_RUN_ID
from hvit_sweeps.model import count_parameters
from hvit_sweeps.model_card import trial_model_card
from hvit_sweeps.sweep.record import metric_names
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.visuals import download_visuals

__all__ = ["check_export_dest", "export_trials", "reproduce_command", "staged_export"]


def export_trials(
    study: optuna.Study, trials: list[FrozenTrial], *, tracker: Tracker, dest: Path, force: bool = False
) -> list[Path]:
    """Export each trial; one trial goes straight into ``dest``, several into ``dest/trial-N``."""
    with staged_export(dest, force=force) as staging:
        for trial in trials:
            folder = staging if len(trials) == 1 else staging / f"trial-{trial.number}"
            folder.mkdir(parents=True, exist_ok=True)
            _export_one(study, trial, tracker=tracker, folder=folder)
        names = sorted(item.name for item in staging.iterdir())
    return [dest / name for name in names]


def check_export_dest(dest: Path, *, force: bool) -> None:
    """Refuse a destination that is a file, or a folder holding files, unless ``force``; checked before any work."""
    if dest.exists() and not dest.is_dir():
        raise HvitError(f"--export {dest}: exists and is not a folder: pass a folder path")
    if not force and dest.is_dir() and any(dest.iterdir()):
        held = ", ".join(sorted(p.name for p in dest.iterdir())[:4])
        raise HvitError(
            f"--export {dest}: the folder is not empty (holds {held}): pass a new or empty folder, "
            "or --force to replace its contents"
        )


@contextlib.contextmanager
def staged_export(dest: Path, *, force: bool) -> Iterator[Path]:
    """A staging folder beside ``dest``, renamed into place only if the block ends without an error.

    With ``force`` an existing ``dest`` is moved aside first and deleted after the
    rename, so the folder holds either all the old files or all the new ones.
    """
    check_export_dest(dest, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-export-", dir=dest.parent))
    try:
        yield staging
        old = dest.with_name(f".{dest.name}-replaced-{os.getpid()}") if dest.exists() else None
        if old is not None:
            os.rename(dest, old)
        os.rename(staging, dest)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_one(study: optuna.Study, trial: FrozenTrial, *, tracker: Tracker, folder: Path) -> None:
    run_id = trial.user_attrs.get(ATTR_RUN_ID)
    if not run_id:
        raise HvitError(f"trial {trial.number} has no MLflow run id: it was not run by hvit-sweep")
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = tracker.download_checkpoint(run_id, Path(tmp))
        checkpoint = load_checkpoint(downloaded)
        params = count_parameters(load_model(checkpoint))  # also proves the weights fit the config
        shutil.copy2(downloaded, folder / "best.pth")
    names = metric_names(study)
    summary = {
        "study": study.study_name,
        "trial": trial.number,
        "mlflow_run_id": run_id,
        "objectives": dict(zip(names, trial.values, strict=False)),
        "params": trial.params,
        "params_m": params / 1e6,
        "epoch": checkpoint.epoch,
        "metrics": checkpoint.metrics,
    }
    (folder / "config.json").write_text(json.dumps(checkpoint.config.model_dump(mode="json"), indent=2))
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "MODEL_CARD.md").write_text(trial_model_card(summary, checkpoint))
    download_visuals(tracker, run_id, folder)  # visuals/ beside the checkpoint, when the trial has them
