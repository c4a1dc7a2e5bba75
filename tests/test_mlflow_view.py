"""The saved runs-table view: written as MLflow's experiment tag, read back from a real store."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from mlflow.entities import Metric, Param, RunTag

from hvit_sweeps.keys import ROLE_TRIAL, TAG_ROLE
from hvit_sweeps.mlflow_view import (
    VIEW_TAG_PREFIX,
    StudyView,
    read_study_view,
    trials_table_url,
    view_key,
    view_url,
    write_study_view,
)
from hvit_sweeps.tracking import Tracker

VIEW = StudyView(
    name="depth-width: trials, best first",
    objectives=["best/val_acc1"],
    ascending=False,
    param_keys=["hp.optim.lr", "hp.stages.base_width"],
    extra_metrics=["model/params_m", "model/flops_m"],
    state_tag="hvit.state",
    curve_metric="val_acc1",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tracker, str]:
    """A real embedded store with one trial run named as the sweep names its keys (made once: ~10 s)."""
    tracker = Tracker(None, root=tmp_path_factory.mktemp("store"))
    experiment_id = tracker.experiment_id("depth-width")
    run = tracker.client.create_run(experiment_id, run_name="trial-0", tags={TAG_ROLE: ROLE_TRIAL})
    tracker.client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, 0.5, 0, 1) for k in ("best/val_acc1", "model/params_m", "model/flops_m", "val_acc1")],
        params=[Param("hp.optim.lr", "0.001"), Param("hp.stages.base_width", "32")],
        tags=[RunTag("hvit.state", "pruned")],
    )
    return tracker, experiment_id


def _column_keys(state: dict) -> set[tuple[str, str]]:
    # "metrics.`best/val_acc1`" -> ("metrics", "best/val_acc1")
    return {(column.split(".", 1)[0], column.split("`")[1]) for column in state["selectedColumns"]}


def test_view_reads_back_from_the_experiment_tag(store: tuple[Tracker, str]) -> None:
    # The tag holds MLflow's envelope; its state is a JSON string, as the UI writes it.
    tracker, experiment_id = store
    write_study_view(tracker, experiment_id, VIEW, key=view_key("depth-width"))
    envelope = json.loads(tracker.client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + "hvit-depth-width"])
    assert set(envelope) == {"name", "createdAt", "updatedAt", "state"}
    assert envelope["name"] == VIEW.name and isinstance(envelope["state"], str)
    assert read_study_view(tracker, experiment_id, "hvit-depth-width") == json.loads(envelope["state"])


def test_columns_sort_and_charts_name_the_trial_runs_keys(store: tuple[Tracker, str]) -> None:
    # Every column, the sort key and every chart axis exist on a trial run, as named.
    tracker, experiment_id = store
    write_study_view(tracker, experiment_id, VIEW, key="k")
    state = read_study_view(tracker, experiment_id, "k")
    run = tracker.client.search_runs([experiment_id], filter_string=state["searchFilter"])[0]
    present = {("metrics", k) for k in run.data.metrics} | {("params", k) for k in run.data.params}
    present |= {("tags", k) for k in run.data.tags}
    assert _column_keys(state) <= present
    assert _column_keys(state) >= {("metrics", "best/val_acc1"), ("tags", "hvit.state"), ("params", "hp.optim.lr")}
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best/val_acc1`", False)
    parallel, curves = state["compareRunCharts"]
    assert set(parallel["selectedParams"]) <= set(run.data.params)
    assert parallel["selectedMetrics"] == ["best/val_acc1"] and curves["metricKey"] == "val_acc1"


def test_rewriting_keeps_created_at(store: tuple[Tracker, str]) -> None:
    # The sweep rewrites the view at the end; the Views menu keeps its order.
    tracker, experiment_id = store
    write_study_view(tracker, experiment_id, VIEW, key="k")
    first = json.loads(tracker.client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + "k"])
    write_study_view(tracker, experiment_id, VIEW, key="k")
    second = json.loads(tracker.client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + "k"])
    assert second["createdAt"] == first["createdAt"] and second["updatedAt"] >= first["updatedAt"]


def test_missing_or_foreign_view_reads_as_none(store: tuple[Tracker, str]) -> None:
    tracker, experiment_id = store
    assert read_study_view(tracker, experiment_id, "absent") is None
    saved_in_the_ui = json.dumps({"name": "x", "createdAt": 0, "state": "deflate;eJw="})
    tracker.client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + "ui", saved_in_the_ui)
    assert read_study_view(tracker, experiment_id, "ui") is None


def test_view_url_names_no_search_facet() -> None:
    # MLflow 3.17 skips a shared view when the URL also carries searchFilter, orderByKey, ...
    url = view_url("http://127.0.0.1:5000/", "7", view_key("a b/c"))
    path, _, query = urlsplit(url).fragment.partition("?")
    assert path == "/experiments/7/runs"
    assert parse_qs(query) == {"workflowType": ["machine_learning"], "viewStateShareKey": ["hvit-a-b-c"]}


def test_plain_table_url_sorts_by_the_first_objective() -> None:
    # The link for a store without a view: filter and sort in the URL.
    query = parse_qs(urlsplit(trials_table_url("http://h", "3", "params_m:minimize")).fragment.partition("?")[2])
    assert query["orderByAsc"] == ["true"] and "params_m" in query["orderByKey"][0]
    assert query["searchFilter"] == [f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"]


def test_the_one_trials_link_is_the_view_once_written(store: tuple[Tracker, str]) -> None:
    # `run`, `ui`, `show`, `best` and the report all link this: the view when it exists, else the sorted table.
    from hvit_sweeps.mlflow_view import study_trials_url

    tracker, experiment_id = store
    before = study_trials_url(tracker, "http://h", experiment_id, "no-view-yet", "val_acc1:maximize")
    assert VIEW_URL_KEY not in before and "orderByKey" in before
    write_study_view(tracker, experiment_id, VIEW, key=view_key("with-view"))
    after = study_trials_url(tracker, "http://h", experiment_id, "with-view", "val_acc1:maximize")
    assert after == view_url("http://h", experiment_id, view_key("with-view"))


VIEW_URL_KEY = "viewStateShareKey"
