"""Exporting trials: checkpoint, config, metrics and model card, all or nothing.

Each trial here is real on a real local MLflow store: a run made as a sweep makes it,
holding a checkpoint of a tiny model, and a finished Optuna trial pointing at it. The
CLI's `best --export` on a real sweep is covered in test_sweep.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY_MODEL

from hvit_sweeps import keys
from hvit_sweeps.checkpoint import load_checkpoint, save_checkpoint
from hvit_sweeps.config import TrainConfig, build_config
from hvit_sweeps.errors import HvitError
from hvit_sweeps.export import export_trials
from hvit_sweeps.flags import reproduce_command
from hvit_sweeps.model import build_model
from hvit_sweeps.tracking import Tracker

TINY = {"data.dataset": "synthetic", **TINY_MODEL}
LR = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)


@pytest.fixture
def tracker(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> Tracker:
    return make_tracker(tmp_path / "mlruns")


@pytest.fixture
def study() -> optuna.Study:
    study = optuna.create_study(study_name="tiny", direction="maximize")
    study.set_metric_names(["val_acc1"])
    return study


def finish_trial(study: optuna.Study, tracker: Tracker, tmp_path: Path, *, value: float) -> optuna.trial.FrozenTrial:
    """A trial as a sweep leaves it: a child run holding its checkpoint, its id on the Optuna trial."""
    trial = study.ask({"optim.lr": LR})
    config = build_config(TINY, {"optim.lr": trial.params["optim.lr"], "epochs": 4}, source="test")
    experiment = tracker.experiment_id(study.study_name)
    parent, _ = tracker.parent_run(experiment, study.study_name, tags={})
    run_id = tracker.start_trial(
        experiment_id=experiment,
        parent_run_id=parent,
        study_name=study.study_name,
        trial_number=trial.number,
        config=config,
        sampled=trial.params,
        tags={},
    )
    local = tmp_path / f"trial-{trial.number}" / keys.CHECKPOINT_FILE
    metrics = {"val_acc1": value, "val_loss": 1.5}
    save_checkpoint(local, model=build_model(config.model), config=config, epoch=3, metrics=metrics, class_names=[])
    tracker.log_file(run_id, local, keys.CHECKPOINT_DIR)
    trial.set_user_attr(keys.ATTR_RUN_ID, run_id)
    study.tell(trial, value)
    return study.trials[trial.number]


# One trial goes straight into the folder: checkpoint, config, metrics and model card.
def test_one_trial_writes_its_files(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    dest = tmp_path / "exported"
    written = export_trials(study, [trial], tracker=tracker, dest=dest)
    names = ["MODEL_CARD.md", "best.pth", "config.json", "metrics.json"]
    assert sorted(p.name for p in dest.iterdir()) == names
    assert sorted(written) == [dest / name for name in names]


# The exported checkpoint is the trial's own, and config.json validates back into the same TrainConfig.
def test_config_json_round_trips(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    dest = tmp_path / "exported"
    export_trials(study, [trial], tracker=tracker, dest=dest)
    checkpoint = load_checkpoint(dest / "best.pth")
    assert checkpoint.config.optim.lr == trial.params["optim.lr"] and checkpoint.epoch == 3
    assert TrainConfig.model_validate(json.loads((dest / "config.json").read_text())) == checkpoint.config


# metrics.json names the study, trial, run, objective by metric name, params and the model's size.
def test_metrics_json_summarises_the_trial(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    export_trials(study, [trial], tracker=tracker, dest=tmp_path / "exported")
    summary = json.loads((tmp_path / "exported" / "metrics.json").read_text())
    assert (summary["study"], summary["trial"], summary["mlflow_run_id"]) == (
        "tiny",
        0,
        trial.user_attrs[keys.ATTR_RUN_ID],
    )
    assert summary["objectives"] == {"val_acc1": 0.3} and summary["params"] == trial.params
    assert summary["metrics"] == {"val_acc1": 0.3, "val_loss": 1.5} and summary["params_m"] > 0


# The model card states the architecture and val metrics, and carries the eval and reproduce commands.
def test_model_card_has_the_reproduce_command(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    export_trials(study, [trial], tracker=tracker, dest=tmp_path / "exported")
    card = (tmp_path / "exported" / "MODEL_CARD.md").read_text()
    config = load_checkpoint(tmp_path / "exported" / "best.pth").config
    assert card.startswith("# HViT from study `tiny`, trial 0")
    assert "| embed dims / depths / heads | 16,32 / 1,1 / 2,2 |" in card and "| val_acc1 | 0.3000 |" in card
    assert "hvit-sweep eval --checkpoint best.pth" in card
    assert card.split("## Reproduce", 1)[1].count(reproduce_command(config)) == 1


# Several trials go into trial-N folders.
def test_several_trials_get_a_folder_each(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trials = [finish_trial(study, tracker, tmp_path, value=v) for v in (0.3, 0.4)]
    dest = tmp_path / "exported"
    export_trials(study, trials, tracker=tracker, dest=dest)
    assert sorted(p.name for p in dest.iterdir()) == ["trial-0", "trial-1"]
    assert load_checkpoint(dest / "trial-1" / "best.pth").metrics["val_acc1"] == 0.4


# A folder that holds files is refused, untouched, before anything is downloaded.
def test_a_folder_that_is_not_empty_is_refused(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    dest = tmp_path / "exported"
    dest.mkdir()
    (dest / "config.json").write_text("the user's own")
    with pytest.raises(HvitError, match=r"not empty \(holds config.json\).*--force"):
        export_trials(study, [trial], tracker=tracker, dest=dest)
    assert [p.name for p in dest.iterdir()] == ["config.json"] and (
        dest / "config.json"
    ).read_text() == "the user's own"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


# With force the folder is replaced whole: no old file stays beside the new ones, and no staging folder is left.
def test_force_replaces_the_folder_whole(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trials = [finish_trial(study, tracker, tmp_path, value=v) for v in (0.3, 0.4)]
    dest = tmp_path / "exported"
    (dest / "trial-0").mkdir(parents=True)
    (dest / "trial-0" / "stale.txt").write_text("from an older export")
    export_trials(study, trials, tracker=tracker, dest=dest, force=True)
    assert sorted(p.name for p in dest.iterdir()) == ["trial-0", "trial-1"]
    assert not (dest / "trial-0" / "stale.txt").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


# A trial hvit-sweep did not run is refused, and a failed export leaves no folder and no staging files.
def test_trial_without_a_run_leaves_nothing(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    good = finish_trial(study, tracker, tmp_path, value=0.3)
    study.tell(study.ask(), 0.1)
    dest = tmp_path / "out" / "exported"
    with pytest.raises(HvitError, match="trial 1 has no MLflow run id"):
        export_trials(study, [good, study.trials[1]], tracker=tracker, dest=dest)
    assert list((tmp_path / "out").iterdir()) == []


# A trial whose checkpoint was dropped (keep_top_k) is one clear error.
def test_trial_without_a_checkpoint_is_refused(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    tracker.delete_checkpoint(trial.user_attrs[keys.ATTR_RUN_ID])
    with pytest.raises(HvitError, match="has no checkpoint artifact"):
        export_trials(study, [trial], tracker=tracker, dest=tmp_path / "exported")


# A destination that is a file is refused before anything is downloaded.
def test_destination_file_is_refused(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    (tmp_path / "exported").write_text("not a folder")
    with pytest.raises(HvitError, match="exists and is not a folder"):
        export_trials(study, [trial], tracker=tracker, dest=tmp_path / "exported")


# The exported weights are the trial's checkpoint, byte for byte in its tensors.
def test_exported_weights_are_the_trials(study: optuna.Study, tracker: Tracker, tmp_path: Path) -> None:
    trial = finish_trial(study, tracker, tmp_path, value=0.3)
    export_trials(study, [trial], tracker=tracker, dest=tmp_path / "exported")
    original = load_checkpoint(tmp_path / "trial-0" / keys.CHECKPOINT_FILE).model_state
    exported = load_checkpoint(tmp_path / "exported" / "best.pth").model_state
    assert original.keys() == exported.keys() and all(torch.equal(original[k], exported[k]) for k in original)
