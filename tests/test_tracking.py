"""The MLflow side of a study, on a real local store: the tags, filters and artifact paths named in keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hvit_sweeps import keys
from hvit_sweeps.config import TrainConfig
from hvit_sweeps.tracking import Tracker


@pytest.fixture
def tracker(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> Tracker:
    return make_tracker(tmp_path / "mlruns")


def start_trial(tracker: Tracker, number: int = 0) -> tuple[str, str, str]:
    """An experiment, its parent run and one trial run: (experiment, parent, trial)."""
    experiment = tracker.experiment_id("s")
    parent, _ = tracker.parent_run(experiment, "s", tags={})
    run_id = tracker.start_trial(
        experiment_id=experiment,
        parent_run_id=parent,
        study_name="s",
        trial_number=number,
        config=TrainConfig(),
        sampled={},
        tags={},
    )
    return experiment, parent, run_id


def test_runs_carry_the_role_and_study_tags(tracker: Tracker) -> None:
    # The parent is tagged as the study, the trial as a trial of it with its number, nested under the parent.
    _, parent, run_id = start_trial(tracker, number=3)
    parent_tags = tracker.client.get_run(parent).data.tags
    assert (parent_tags[keys.TAG_ROLE], parent_tags[keys.TAG_STUDY]) == (keys.ROLE_STUDY, "s")
    tags = tracker.client.get_run(run_id).data.tags
    assert (tags[keys.TAG_ROLE], tags[keys.TAG_STUDY], tags[keys.TAG_TRIAL_NUMBER]) == (keys.ROLE_TRIAL, "s", "3")
    assert tags["mlflow.parentRunId"] == parent


def test_role_filter_finds_each_role(tracker: Tracker) -> None:
    # The filter the runs-table link uses lists the trials and not the parent; study_runs lists the parent.
    experiment, parent, run_id = start_trial(tracker)
    trials = tracker.client.search_runs([experiment], filter_string=keys.role_filter(keys.ROLE_TRIAL))
    assert [r.info.run_id for r in trials] == [run_id]
    assert [r.info.run_id for r in tracker.study_runs(experiment)] == [parent]


def test_plots_land_at_their_artifact_path(tracker: Tracker) -> None:
    # A figure logged by name is found at plot_artifact(name), the path the CLI links to.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, parent, _ = start_trial(tracker)
    names = tracker.log_plots(parent, {keys.PLOT_HISTORY: plt.figure()})
    artifact = keys.plot_artifact(keys.PLOT_HISTORY)
    assert [a.path for a in tracker.client.list_artifacts(parent, keys.PLOTS_DIR)] == [artifact]
    assert names == [Path(artifact).name]


def test_checkpoint_round_trip_and_delete(tracker: Tracker, tmp_path: Path) -> None:
    # A checkpoint uploaded the way the objective does it downloads from CHECKPOINT_ARTIFACT, and keep_top_k deletes it.
    _, _, run_id = start_trial(tracker)
    local = tmp_path / keys.CHECKPOINT_FILE
    local.write_bytes(b"weights")
    tracker.log_file(run_id, local, keys.CHECKPOINT_DIR)
    assert [a.path for a in tracker.client.list_artifacts(run_id, keys.CHECKPOINT_DIR)] == [keys.CHECKPOINT_ARTIFACT]
    assert tracker.download_checkpoint(run_id, tmp_path / "down").read_bytes() == b"weights"
    tracker.delete_checkpoint(run_id)
    assert tracker.client.list_artifacts(run_id, keys.CHECKPOINT_DIR) == []


def test_parent_run_is_found_again_not_duplicated(tracker: Tracker) -> None:
    # A rerun of the study finds its one parent run (created False), so new trials nest under the same run.
    experiment = tracker.experiment_id("s")
    first, created = tracker.parent_run(experiment, "s", tags={})
    again, created_again = tracker.parent_run(experiment, "s", tags={})
    assert (created, again, created_again) == (True, first, False)
    assert [r.info.run_id for r in tracker.study_runs(experiment)] == [first]


def test_end_run_sets_status_and_tags(tracker: Tracker) -> None:
    # Closing a trial records its final status and the tags that explain it.
    _, _, run_id = start_trial(tracker)
    tracker.end_run(run_id, "KILLED", tags={keys.TAG_FAILURE: "pruned at epoch 2"})
    assert tracker.run_status(run_id) == "KILLED"
    assert tracker.client.get_run(run_id).data.tags[keys.TAG_FAILURE] == "pruned at epoch 2"
