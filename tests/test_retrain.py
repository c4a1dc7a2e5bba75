"""The final model of a study: best trial retrained on train+val, tested once, logged, registered, exported.

A real tiny study runs through the CLI on a few hundred real Fashion-MNIST images
(Debian's files), then :func:`retrain_best` runs in this process against the same
stores, as `hvit-sweep best --retrain` will.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import hvit, ok, tiny_study

from hvit_sweeps.checkpoint import load_checkpoint
from hvit_sweeps.data import FASHION_MNIST_SYSTEM_DIR
from hvit_sweeps.errors import HvitError
from hvit_sweeps.evaluate import evaluate_checkpoint
from hvit_sweeps.keys import ATTR_EXPERIMENT, ATTR_PARENT, ATTR_RUN_ID, TAG_ROLE
from hvit_sweeps.retrain import (
    FINAL_CHECKPOINT,
    ROLE_FINAL,
    RetrainResult,
    best_complete_trial,
    retrain_best,
)
from hvit_sweeps.sweep import open_storage
from hvit_sweeps.tracking import Tracker

pytestmark = [
    pytest.mark.slow,  # every test runs a real study through the CLI
    pytest.mark.skipif(
        not FASHION_MNIST_SYSTEM_DIR.is_dir(),
        reason=f"Debian's fashion-mnist files are not in {FASHION_MNIST_SYSTEM_DIR}",
    ),
]

STUDY = "fmnist-tiny"


def tiny_fashion_study(data_dir: Path) -> str:
    """conftest's tiny study (two 2-epoch trials of a 16/32 model, lr searched) on real Fashion-MNIST images.

    200 train+val images (180 + 20), 100 test, on the CPU, never downloading.
    """
    real = "\n".join(
        [
            '"data.dataset" = "fashion-mnist"',
            f'"data.data_dir" = "{data_dir}"',
            '"data.download" = false',
            '"runtime.device" = "cpu"',
        ]
    )
    text = tiny_study(STUDY, trials=2, max_epochs=2, train_samples=200)
    text = text.replace('"data.dataset" = "synthetic"', real).replace(
        '"data.max_eval_samples" = 64', '"data.max_eval_samples" = 100'
    )
    assert "synthetic" not in text and '"data.max_eval_samples" = 100' in text  # conftest's study changed shape
    return text


def run_tiny_study(folder: Path, *tracking: str) -> optuna.Study:
    """The tiny study run by the real CLI under ``folder``, loaded back from its journal."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(tiny_fashion_study(folder / "data"))
    ok(hvit("run", "--study", "study.toml", "--root", "mlruns", *tracking, cwd=folder))
    return optuna.load_study(study_name=STUDY, storage=open_storage(None, root=folder / "mlruns"))


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study, Tracker]:
    folder = tmp_path_factory.mktemp("retrain")
    study = run_tiny_study(folder)
    return folder, study, Tracker(None, root=folder / "mlruns")


@pytest.fixture(scope="module")
def final(swept: tuple[Path, optuna.Study, Tracker]) -> RetrainResult:
    folder, study, tracker = swept
    return retrain_best(study, tracker=tracker, dest=folder / "final", seed=7)


# The registry's alias points at a version of the final run, tagged with its test figure.
def test_registered_version_has_alias_and_test_figure(swept, final: RetrainResult) -> None:
    client = swept[2].client
    version = client.get_model_version_by_alias(f"hvit-{STUDY}", "champion")
    assert str(version.version) == final.registered.version and version.run_id == final.run_id
    assert float(version.tags["test_acc1"]) == final.test_acc1
    assert version.source == f"runs:/{final.run_id}/checkpoint"


# The registered figure is what a fresh evaluation of the exported checkpoint on test gives.
def test_registered_figure_matches_fresh_eval(swept, final: RetrainResult) -> None:
    version = swept[2].client.get_model_version_by_alias(f"hvit-{STUDY}", "champion")
    checkpoint = load_checkpoint(final.exported / FINAL_CHECKPOINT)
    results, data = evaluate_checkpoint(checkpoint, splits=("test",))
    assert data.sizes["test"] == final.dataset_sizes["test"] == 100
    assert results["test"]["acc1"] == pytest.approx(float(version.tags["test_acc1"]), abs=1e-6)


# The final model trained on train+val (200 images) for the trial's 2 epochs, with the seed asked for.
def test_final_run_trained_on_train_plus_val(swept, final: RetrainResult) -> None:
    _, study, tracker = swept
    run = tracker.client.get_run(final.run_id)
    tags = run.data.tags
    assert (tags[TAG_ROLE], tags["hvit.trained_on"], run.info.status) == (ROLE_FINAL, "train+val", "FINISHED")
    assert tags["mlflow.parentRunId"] == study.user_attrs[ATTR_PARENT]
    best = best_complete_trial(study)
    assert (tags["hvit.source_trial"], tags["hvit.source_run_id"]) == (str(best.number), best.user_attrs[ATTR_RUN_ID])
    assert final.dataset_sizes["train"] == 200 and (final.config.epochs, final.config.seed) == (2, 7)
    history = tracker.client.get_metric_history(final.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert "seen_val_acc1" in run.data.metrics and "val_acc1" not in run.data.metrics


# The alias resolves to the same bytes as the export; the card states the figure and how it was obtained.
def test_export_and_registry_hold_the_same_checkpoint(
    swept, final: RetrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow 3.17 resolves models:/ through the process-wide URIs, whatever registry_uri is passed.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", swept[2].uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", swept[2].uri)
    got = mlflow.artifacts.download_artifacts(f"models:/hvit-{STUDY}@champion", dst_path=str(tmp_path))
    assert filecmp.cmp(Path(got) / FINAL_CHECKPOINT, final.exported / FINAL_CHECKPOINT, shallow=False)
    assert {p.name for p in final.exported.iterdir()} == {
        FINAL_CHECKPOINT,
        "config.json",
        "metrics.json",
        "MODEL_CARD.md",
    }
    card = (final.exported / "MODEL_CARD.md").read_text()
    assert (
        f"**Test top-1 {final.test_acc1:.4f}**" in card
        and "train plus val (200 images) for 2 epochs with seed 7" in card
    )
    summary = json.loads((final.exported / "metrics.json").read_text())
    assert summary["test"]["test_acc1"] == final.test_acc1 and summary["registered"]["alias"] == "champion"


# Retraining again makes a second version and moves the alias to it.
def test_second_retrain_moves_the_alias(swept, final: RetrainResult) -> None:
    _, study, tracker = swept
    again = retrain_best(study, tracker=tracker, dest=None, seed=8)
    assert int(again.registered.version) == int(final.registered.version) + 1 and again.exported is None
    assert (
        str(tracker.client.get_model_version_by_alias(f"hvit-{STUDY}", "champion").version) == again.registered.version
    )


# A study with no complete trial is refused in one line, before anything is trained or logged.
def test_no_complete_trial_is_refused(swept) -> None:
    empty = optuna.create_study(study_name="empty")
    with pytest.raises(HvitError, match=r"^study 'empty' has no complete trial: run more trials first"):
        retrain_best(empty, tracker=swept[2], dest=None)


# An alias or model name the registry would refuse is refused in one line before any training or run.
@pytest.mark.parametrize(("option", "value"), [("alias", "latest"), ("registry_name", "bad/name")])
def test_refused_registry_names_fail_before_training(swept, option: str, value: str) -> None:
    _, study, tracker = swept
    experiment = study.user_attrs[ATTR_EXPERIMENT]
    before = len(tracker.client.search_runs([experiment]))
    with pytest.raises(HvitError, match=rf"^--{option.replace('_', '-')} {value}: "):
        retrain_best(study, tracker=tracker, **{option: value})
    assert len(tracker.client.search_runs([experiment])) == before


# A trial whose checkpoint artifact is gone is refused, naming the trial (runs after the tests above).
def test_missing_checkpoint_is_refused(swept) -> None:
    _, study, tracker = swept
    best = best_complete_trial(study)
    other = next(t for t in study.trials if t.number != best.number)
    tracker.delete_checkpoint(other.user_attrs[ATTR_RUN_ID])
    with pytest.raises(HvitError, match=rf"^trial {other.number}: run \w+ has no checkpoint artifact"):
        retrain_best(study, tracker=tracker, trial_number=other.number)


# The same retrain against a real MLflow server (PostgreSQL store, proxied artifacts) registers too.
def test_retrain_on_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    study = run_tiny_study(tmp_path, "--tracking-uri", mlflow_server)
    tracker = Tracker(mlflow_server, root=tmp_path / "mlruns")
    result = retrain_best(study, tracker=tracker, dest=tmp_path / "final", registry_name="hvit-server-final")
    version = tracker.client.get_model_version_by_alias("hvit-server-final", "champion")
    assert (version.run_id, float(version.tags["test_acc1"])) == (result.run_id, result.test_acc1)
    evaluated, _ = evaluate_checkpoint(load_checkpoint(result.exported / FINAL_CHECKPOINT), splits=("test",))
    assert evaluated["test"]["acc1"] == pytest.approx(result.test_acc1, abs=1e-6)
