"""The tracking boundary: only tracking.py talks to MLflow's client, and what it hands back is typed.

The methods are tried on a real embedded store (the ``make_tracker`` fixture), as the callers use them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from hvit_sweeps import keys
from hvit_sweeps.tracking import TrackedRun, Tracker

PACKAGE = Path(__file__).resolve().parents[1] / "hvit_sweeps"
# The one module that may hold an MLflow client; and a Redis client, which is not MLflow's, by name.
BOUNDARY = "tracking.py"
ALLOWED = {("sweep/storage.py", "client.ping")}


def client_uses(package: Path) -> Iterator[tuple[str, int, str]]:
    """(module, line, code) of each use of an MLflow client, or of mlflow's fluent API, outside tracking.py."""
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module == BOUNDARY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] == "MlflowClient":
                found = f"import {node.name}"
            elif isinstance(node, ast.Name) and node.id == "MlflowClient":
                found = node.id
            elif isinstance(node, ast.Attribute) and (
                node.attr in ("client", "MlflowClient")
                or (isinstance(node.value, ast.Name) and node.value.id in ("client", "mlflow"))
            ):
                found = ast.unparse(node)
            else:
                continue
            if (module, found) not in ALLOWED:
                yield module, getattr(node, "lineno", 0), found


def test_only_tracking_talks_to_the_mlflow_client() -> None:
    # A call through `tracker.client` (or a client of one's own) would bypass the Tracker and hand MLflow's
    # untyped objects around again: every such call belongs in tracking.py, as a method named for what it does.
    assert list(client_uses(PACKAGE)) == []


def test_the_scan_finds_a_client_call(tmp_path: Path) -> None:
    # The scan itself: each way of reaching the client is caught, the Redis one is not.
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "storage.py").write_text("def f(client):\n    client.ping()\n")
    (tmp_path / "a.py").write_text(
        "from mlflow import MlflowClient\nimport mlflow\n\n"
        "def f(tracker, uri):\n    tracker.client.set_tag('r', 'k', 'v')\n    MlflowClient(uri)\n"
        "    mlflow.set_tag('k', 'v')\n"
    )
    (tmp_path / "tracking.py").write_text("def g(self):\n    self.client.get_run('r')\n")
    found = {(module, code) for module, _, code in client_uses(tmp_path)}
    assert found == {
        ("a.py", "import MlflowClient"),
        ("a.py", "tracker.client"),
        ("a.py", "MlflowClient"),
        ("a.py", "mlflow.set_tag"),
    }


@pytest.fixture
def tracker(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> Tracker:
    return make_tracker(tmp_path / "mlruns")


def study(tracker: Tracker, name: str = "s") -> tuple[str, str]:
    """An experiment and its study's parent run."""
    experiment = tracker.experiment_id(name)
    parent, _ = tracker.parent_run(experiment, name, tags={})
    return experiment, parent


def child(tracker: Tracker, experiment: str, parent: str, role: str, study_name: str = "s") -> str:
    return tracker.create_child_run(
        experiment, parent, name=f"{role}-0", tags={keys.TAG_ROLE: role, keys.TAG_STUDY: study_name}
    )


def test_run_reads_back_as_a_typed_run(tracker: Tracker) -> None:
    # What was logged comes back in the TrackedRun's own fields, for the report and the sweep to read.
    experiment, parent = study(tracker)
    run_id = child(tracker, experiment, parent, keys.ROLE_TRIAL)
    tracker.log_params(run_id, {"optim.lr": 0.01})
    tracker.log_metrics(run_id, {"val_acc1": 0.5}, step=1)
    tracker.set_tag(run_id, keys.TAG_RANK, "001")
    run = tracker.run(run_id)
    assert isinstance(run, TrackedRun)
    assert (run.run_id, run.experiment_id, run.name, run.status) == (run_id, experiment, "trial-0", "RUNNING")
    assert run.tags["mlflow.parentRunId"] == parent  # nested under the study's run
    assert (run.tags[keys.TAG_ROLE], run.tags[keys.TAG_RANK]) == (keys.ROLE_TRIAL, "001")
    assert (run.params, run.metrics) == ({"optim.lr": "0.01"}, {"val_acc1": 0.5})
    assert run.artifact_uri and run.start_time is not None and run.end_time is None
    tracker.end_run(run_id, "FINISHED")
    assert tracker.run(run_id).end_time is not None
    with pytest.raises(MlflowException):
        tracker.run("0" * 32)  # report and retrain turn this into "pass the --tracking-uri ..."


def test_trial_runs_are_the_studys_trials_only(tracker: Tracker) -> None:
    # Not the parent, not a replicate of the same study, not another study's trial in the same experiment.
    experiment, parent = study(tracker)
    trials = {child(tracker, experiment, parent, keys.ROLE_TRIAL) for _ in range(3)}
    child(tracker, experiment, parent, "replicate")
    child(tracker, experiment, parent, keys.ROLE_TRIAL, study_name="other")
    assert {run.run_id for run in tracker.trial_runs(experiment, "s")} == trials


def test_study_runs_of_every_experiment(tracker: Tracker) -> None:
    # `ui` lists every study in the store: one parent run per experiment here, and none of their trials.
    first, first_parent = study(tracker, "a")
    second, second_parent = study(tracker, "b")
    child(tracker, first, first_parent, keys.ROLE_TRIAL, study_name="a")
    found = {(run.experiment_id, run.run_id, run.tags[keys.TAG_STUDY]) for run in tracker.study_runs()}
    assert found == {(first, first_parent, "a"), (second, second_parent, "b")}
    assert [run.run_id for run in tracker.study_runs(second)] == [second_parent]


def test_experiment_tags_round_trip(tracker: Tracker) -> None:
    experiment, _ = study(tracker)
    assert tracker.experiment_tag(experiment, "mlflow.sharedViewState.k") is None
    tracker.set_experiment_tag(experiment, "mlflow.sharedViewState.k", "{}")
    assert tracker.experiment_tag(experiment, "mlflow.sharedViewState.k") == "{}"


def test_artifact_folder_upload_list_download_delete(tracker: Tracker, tmp_path: Path) -> None:
    # The visuals' and resume checkpoints' path: a folder up, found, fetched into a folder, and dropped.
    experiment, parent = study(tracker)
    run_id = child(tracker, experiment, parent, keys.ROLE_TRIAL)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.json").write_text("{}")
    assert not tracker.has_artifacts(run_id, "visuals")
    tracker.log_artifacts(run_id, folder, "visuals")
    assert tracker.has_artifacts(run_id, "visuals")
    local = tracker.download_artifacts(run_id, "visuals", tmp_path / "down")
    assert (local / "a.json").read_text() == "{}" and local.parent == tmp_path / "down"
    tracker.delete_artifacts(run_id, "visuals")
    assert not tracker.has_artifacts(run_id, "visuals")
    with pytest.raises((MlflowException, OSError)):
        tracker.download_artifacts(run_id, "visuals", tmp_path / "again")


def test_register_model_version_moves_the_alias(tracker: Tracker) -> None:
    # Each registration is a new version with the alias on it; a second create of the model says it exists.
    experiment, parent = study(tracker)
    run_id = child(tracker, experiment, parent, keys.ROLE_FINAL)
    tracker.create_registered_model("m", description="d")
    with pytest.raises(MlflowException) as err:
        tracker.create_registered_model("m", description="d")
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"
    source = f"runs:/{run_id}/{keys.CHECKPOINT_DIR}"
    versions = [
        tracker.register_model_version("m", source, run_id=run_id, tags={"k": "v"}, description="d", alias="best")
        for _ in range(2)
    ]
    assert versions == ["1", "2"]
    assert str(tracker.client.get_model_version_by_alias("m", "best").version) == "2"
