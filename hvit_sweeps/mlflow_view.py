"""A saved runs-table view per study, so that the MLflow UI opens ready to compare trials.

MLflow 3.17's experiment page keeps a saved view as the experiment tag
``mlflow.sharedViewState.<key>``: a JSON envelope ``{"name", "createdAt", "updatedAt",
"state"}`` whose ``state`` is a JSON *string* holding the page's search facets
(``searchFilter``, ``orderByKey``, ``orderByAsc``) and its UI state (``selectedColumns``,
``runsHiddenMode``, ``compareRunCharts``, ``compareRunSections``, ...). The runs URL with
``viewStateShareKey=<key>`` applies it, and the view is listed in the page's Views menu.
Sources: ``savedViewEnvelope.ts``, ``useSharedExperimentViewState.ts`` and
``ExperimentPageUIState.ts`` under ``mlflow/server/js/src/experiment-tracking``, checked
against the built UI of mlflow 3.17.2.

The UI reads fields it does not know as absent and fills the rest from its defaults, so
the state written here names only what the view changes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from hvit_sweeps.keys import ROLE_TRIAL, role_filter
from hvit_sweeps.tracking import Tracker, runs_table_url

__all__ = [
    "StudyView",
    "read_study_view",
    "study_trials_url",
    "trials_table_url",
    "view_key",
    "view_state",
    "view_url",
    "write_study_view",
]

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's EXPERIMENT_PAGE_VIEW_STATE_SHARE_TAG_PREFIX
VIEW_URL_PARAM = "viewStateShareKey"  # MLflow's EXPERIMENT_PAGE_VIEW_STATE_SHARE_URL_PARAM_KEY
_SECTION_UUID = "hvit-study"
_PARALLEL_UUID = "hvit-parallel"
_CURVES_UUID = "hvit-curves"
_COST_UUID = "hvit-cost"


@dataclass(frozen=True)
class StudyView:
    """What a study's saved view shows.

    Args:
        name: The view's name in the Views menu.
        objectives: The objective metrics' run keys; the table is sorted by the first.
        ascending: Sort order of the first objective (True when it is minimized).
        param_keys: The searched params' run keys, as columns and parallel-coordinates axes.
        extra_metrics: More metric columns, e.g. the model's size and cost.
        state_tag: The run tag holding the trial's state (complete, pruned, failed, running).
        curve_metric: The per-epoch metric drawn as one line per trial.
        cost_metric: A measured cost, charted against the first objective (one point per trial).
        rank_tag: A run tag holding each trial's zero-padded place, best first; the table sorts by it
            when given (complete before pruned, ties by trial number), else by the first objective.
        search_filter: MLflow search filter of the runs listed: the study's trial runs.
    """

    name: str
    objectives: Sequence[str]
    ascending: bool
    param_keys: Sequence[str]
    extra_metrics: Sequence[str] = ()
    state_tag: str | None = None
    curve_metric: str | None = None
    cost_metric: str | None = None
    rank_tag: str | None = None
    search_filter: str = role_filter(ROLE_TRIAL)


def view_key(study_name: str) -> str:
    """The view's key for a study: it travels in a URL and a tag name, so only [A-Za-z0-9_-]."""
    return "hvit-" + re.sub(r"[^A-Za-z0-9_-]+", "-", study_name)


def _column(kind: str, key: str) -> str:
    # The UI's canonical column id (makeCanonicalSortKey): "metrics.`best/val_acc1`".
    return f"{kind}.`{key}`"


def view_state(view: StudyView) -> dict[str, Any]:
    """The serialized experiment-page state that MLflow's UI applies for the view."""
    columns = [
        # dict.fromkeys: an objective may also be an extra metric (model/params_m), shown once.
        *(_column("metrics", key) for key in dict.fromkeys((*view.objectives, *view.extra_metrics))),
        *(_column("tags", tag) for tag in (view.state_tag, view.rank_tag) if tag),
        *(_column("params", key) for key in view.param_keys),
    ]
    return {
        "searchFilter": view.search_filter,
        "orderByKey": _column("tags", view.rank_tag) if view.rank_tag else _column("metrics", view.objectives[0]),
        "orderByAsc": True if view.rank_tag else view.ascending,
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",  # the default charts only the first 10 runs
        "compareRunCharts": _charts(view),
        # One section of our own, first: MLflow appends its generated ones after it.
        "compareRunSections": [
            {"uuid": _SECTION_UUID, "name": "Study", "display": True, "isReordered": True, "deleted": False}
        ],
        "isAccordionReordered": True,
    }


def _charts(view: StudyView) -> list[dict[str, Any]]:
    common = {"metricSectionId": _SECTION_UUID, "deleted": False, "isGenerated": False, "runsCountToCompare": 100}
    charts = [
        {
            **common,
            "uuid": _PARALLEL_UUID,
            "type": "PARALLEL",
            "selectedParams": list(view.param_keys),
            "selectedMetrics": list(view.objectives),
            "showAllRuns": True,
        }
    ]
    if view.curve_metric:
        charts.append(
            {
                **common,
                "uuid": _CURVES_UUID,
                "type": "LINE",
                "metricKey": view.curve_metric,
                "selectedMetricKeys": [view.curve_metric],
                "xAxisKey": "step",  # we log epochs as steps
                "scaleType": "linear",
                "xAxisScaleType": "linear",
                "lineSmoothness": 0,
                "useGlobalXaxisKey": False,
                "useGlobalLineSmoothing": False,
            }
        )
    if view.cost_metric:
        axis = {"type": "METRIC"}
        charts.append(
            {
                **common,
                "uuid": _COST_UUID,
                "type": "SCATTER",
                "xaxis": {**axis, "key": view.cost_metric},
                "yaxis": {**axis, "key": view.objectives[0]},
            }
        )
    return charts


def write_study_view(tracker: Tracker, experiment_id: str, view: StudyView, *, key: str) -> None:
    """Save (or update) the view as the experiment tag that the UI and :func:`view_url` open.

    Rewriting keeps ``createdAt``, so the view keeps its place in the Views menu.
    """
    now = int(time.time() * 1000)
    previous = _read_envelope(tracker, experiment_id, key)
    created = previous.get("createdAt", now) if previous else now
    envelope = {"name": view.name, "createdAt": created, "updatedAt": now, "state": json.dumps(view_state(view))}
    tracker.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))


def read_study_view(tracker: Tracker, experiment_id: str, key: str) -> dict[str, Any] | None:
    """The saved state of view ``key``, or None when the experiment has none (or a foreign one)."""
    envelope = _read_envelope(tracker, experiment_id, key)
    if envelope is None or not isinstance(envelope.get("state"), str):
        return None
    try:
        state = json.loads(envelope["state"])
    except json.JSONDecodeError:
        return None  # e.g. saved from the UI, deflate-compressed: still MLflow's to open
    return state if isinstance(state, dict) else None


def _read_envelope(tracker: Tracker, experiment_id: str, key: str) -> dict[str, Any] | None:
    raw = tracker.experiment_tag(experiment_id, VIEW_TAG_PREFIX + key)
    try:
        envelope = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    return envelope if isinstance(envelope, dict) else None


def view_url(base_url: str, experiment_id: str, key: str) -> str:
    """The runs page opened on the saved view ``key``.

    The URL names no search facet (searchFilter, orderByKey, ...): MLflow 3.17 skips a
    shared view whenever the URL carries one, so the view itself holds filter and sort.
    """
    query = {"workflowType": "machine_learning", VIEW_URL_PARAM: key}
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def study_trials_url(tracker: Tracker, base_url: str, experiment_id: str, study_name: str, objective: str) -> str:
    """The one link to a study's trials: its saved view when the store has one, else the plain table.

    MLflow sends a view link whose key it does not find to the experiment's unfiltered page,
    so the key is only used once the view is there. ``objective`` as the parent run records
    it ("val_acc1:maximize").
    """
    key = view_key(study_name)
    if read_study_view(tracker, experiment_id, key) is not None:
        return view_url(base_url, experiment_id, key)
    return trials_table_url(base_url, experiment_id, objective)


def trials_table_url(base_url: str, experiment_id: str, objective: str) -> str:
    """The plain trial table sorted by ``objective`` as the parent run records it ("val_acc1:maximize").

    For a study without a saved view: filter and sort travel in the URL, columns do not.
    """
    from hvit_sweeps.metrics import tracked_metric

    metric, _, direction = objective.partition(":")
    if not metric:
        return runs_table_url(base_url, experiment_id)
    return runs_table_url(base_url, experiment_id, order_by=tracked_metric(metric), ascending=direction == "minimize")
