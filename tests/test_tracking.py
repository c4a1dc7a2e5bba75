"""The MLflow side of a study, on a real local store: the tags, filters and artifact paths named in keys."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from conftest import free_port
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

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
    assert [r.run_id for r in tracker.study_runs(experiment)] == [parent]


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
    assert [r.run_id for r in tracker.study_runs(experiment)] == [first]


def test_end_run_sets_status_and_tags(tracker: Tracker) -> None:
    # Closing a trial records its final status and the tags that explain it.
    _, _, run_id = start_trial(tracker)
    tracker.end_run(run_id, "KILLED", tags={keys.TAG_FAILURE: "pruned at epoch 2"})
    assert tracker.run_status(run_id) == "KILLED"
    assert tracker.client.get_run(run_id).data.tags[keys.TAG_FAILURE] == "pruned at epoch 2"


def test_outage_notice_says_down_and_back_and_keeps_urllib3_debug_to_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Through real urllib3 retries: one line when a request to the server is retried, one when it answers;
    # the DEBUG request log it turns on reaches no other handler (caplog stands for a user's basicConfig).
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    Tracker(url, root=tmp_path)  # installs the notice; creating the client sends no request
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=Retry(total=1, backoff_factor=0)))
    with pytest.raises(requests.ConnectionError):
        session.get(f"{url}/health", timeout=2)  # nothing listens yet: one retry, then the error
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert session.get(f"{url}/", timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracking: ")]
    assert len(notices) == 2 and "is not answering" in notices[0] and "answers again" in notices[1], notices
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and r.levelname == "DEBUG"]


def test_one_point_summaries_chart_only_what_the_view_needs(make_tracker, tmp_path: Path) -> None:
    # The run page charts every metric before the per-epoch curves: the rest of the summaries are params.
    from hvit_sweeps.study import load_study

    tracker = make_tracker(tmp_path / "mlruns")
    run_id = tracker.client.create_run(tracker.experiment_id("summaries")).info.run_id
    spec, _ = load_study("smoke")
    values = {
        "best/val_acc1": 0.11,
        "best/val_loss": 4.6,
        "best/epoch": 3.0,
        "model/params_m": 0.02,
        "model/flops_m": 1.5,
    }
    tracker.log_summary(run_id, values, charted=spec.charted_summaries(), step=3)
    data = tracker.client.get_run(run_id).data
    assert set(data.metrics) == {"best/val_acc1", "model/params_m", "model/flops_m"}
    assert (data.params["best/val_loss"], data.params["best/epoch"]) == ("4.6", "3")
