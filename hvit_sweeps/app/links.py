"""Where to look in MLflow: the links `run`, `show` and `best` print."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hvit_sweeps.app.options import DEFAULT_ROOT, StudyRef
from hvit_sweeps.keys import ATTR_RUN_ID, PLOT_HISTORY, TRACKING_DB, plot_artifact, ui_base

if TYPE_CHECKING:
    import optuna

    from hvit_sweeps.sweep import Connected, Sweep
    from hvit_sweeps.sweep.record import StudyRecord

__all__ = ["run_links", "tracking_hint", "trials_link"]


def tracking_hint(sweep: Sweep, connected: Connected) -> str:
    """Where to look: the trials, best first, and the study's run with its plots."""
    from hvit_sweeps.mlflow_view import view_key, view_url
    from hvit_sweeps.tracking import run_url

    local = sweep.tracker.local
    base = ui_base(sweep.tracker.uri if not local else None)
    ui = ["hvit-sweep", "ui", *([] if sweep.root == DEFAULT_ROOT else ["--root", str(sweep.root)])]
    return "\n".join(
        [
            *([f"MLflow: run `{shlex.join(ui)}`, then open"] if local else []),
            f"trials, best first: {view_url(base, connected.experiment_id, view_key(sweep.study_name))}",
            "study run (plots, best so far): "
            + run_url(base, connected.experiment_id, connected.parent_run_id, artifact=plot_artifact(PLOT_HISTORY)),
            "(MLflow shows accuracies as fractions: 0.42 there is 42.00% here)",
        ]
    )


def trials_link(ref: StudyRef, record: StudyRecord) -> list[str]:
    """The line with the study's one trials link (its saved view), as `run` and `ui` print it."""
    from hvit_sweeps.mlflow_view import study_trials_url, view_key, view_url

    experiment = record.experiment_id
    if not experiment:
        return []
    base = ui_base(ref.tracking_uri)
    objective = f"{record.metric_names[0]}:{record.directions[0].name.lower()}"
    url = view_url(base, experiment, view_key(record.name))  # the link the sweep wrote its view for
    if ref.tracking_uri is None and not (ref.root / TRACKING_DB).is_file():
        return [f"trials, best first: {url}"]  # reading a study must not create an embedded tracking store
    try:
        url = study_trials_url(ref.tracker(), base, experiment, record.name, objective)
    except Exception:  # noqa: BLE001 - a store that does not answer, or does not hold this study (another --root)
        pass
    return [f"trials, best first: {url}"]


def run_links(trials: Sequence[optuna.trial.FrozenTrial], *, experiment_id: str | None, base: str) -> list[str]:
    """One line per trial: its MLflow run page."""
    from hvit_sweeps.tracking import run_url

    lines = []
    for trial in trials:
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id and experiment_id:
            lines.append(f"trial {trial.number}: {run_url(base, experiment_id, run_id)}")
    return lines
