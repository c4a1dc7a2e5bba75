"""The study's parameter importance on its MLflow parent run, where people compare runs.

Optuna's fANOVA importance of each searched parameter for the first objective, logged as
``importance/<param>`` metrics (step: complete trials so far) and as ``importance.json``,
with the tag ``hvit.importance_note`` saying how many complete trials it rests on: below
about 20, the ranking is mostly noise.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from hvit_sweeps.keys import TAG_IMPORTANCE_NOTE, importance_metric
from hvit_sweeps.tracking import Tracker

__all__ = ["FEW_TRIALS", "log_importance"]

FEW_TRIALS = 20  # below this many complete trials, importances are a guess


def log_importance(tracker: Tracker, study: optuna.Study, parent_run_id: str) -> dict[str, float]:
    """Log the importances and their note on the parent run; empty (and a note) when they cannot be computed."""
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    importances: dict[str, float] = {}
    if complete >= 2:
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                importances = optuna.importance.get_param_importances(study, target=target)
            except (ValueError, RuntimeError, ZeroDivisionError):
                importances = {}  # e.g. every trial drew the same values
    if not importances:
        note = f"no importance yet: {complete} complete trial(s), with parameters that vary"
    elif complete < FEW_TRIALS:
        note = f"from {complete} complete trials only: below about {FEW_TRIALS} the ranking is mostly noise"
    else:
        note = f"from {complete} complete trials (fANOVA, first objective)"
    metrics = {importance_metric(name): float(value) for name, value in importances.items()}
    if metrics:
        tracker.log_metrics(parent_run_id, metrics, step=complete)
        tracker.log_dict(parent_run_id, {"complete_trials": complete, "note": note, "importance": importances},
                         "importance.json")  # fmt: skip
    tracker.set_tag(parent_run_id, TAG_IMPORTANCE_NOTE, note)
    return importances
