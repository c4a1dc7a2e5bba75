"""One best-first order of a study's trials, for every surface: the MLflow view, the CLI, the report.

MLflow's runs table sorts by one key, and breaks ties by start time, newest first; a
pruned trial's best value sits among complete ones. So the sweep writes each finished
trial's place as the run tag ``hvit.rank`` ("000001" is the best), and the saved view
sorts by it: complete trials first, best value first, ties by trial number; then pruned
trials by the last value they reported, ties by trial number. Failed, interrupted and
running trials get no rank and so come last. A tag, not a metric: it draws no chart.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from hvit_sweeps.keys import ATTR_RUN_ID, TAG_RANK, rank_tag_value
from hvit_sweeps.tracking import Tracker

__all__ = ["ranked_trials", "write_ranks"]

# The ranks this process wrote, by run id: a trial that moves costs one call, one that stays none.
_written: dict[str, str] = {}


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first, then pruned ones by their last report; ties by trial number."""
    sign = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials} if len(sign) > 1 else set()
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))

    def last_report(trial: FrozenTrial) -> float:
        values = trial.intermediate_values
        return sign[0] * values[max(values)] if values else math.inf

    return [
        *sorted(complete, key=lambda t: (t.number not in front, sign[0] * t.values[0], t.number)),
        *sorted(pruned, key=lambda t: (last_report(t), t.number)),
    ]


def write_ranks(tracker: Tracker, study: optuna.Study, *, every: bool = False) -> None:
    """Tag each ranked trial's run with its place; ``every`` rewrites all, not just those that moved.

    A worker writes after each trial (other workers' writes may interleave); the end of a
    run or worker rewrites every rank, so the order it leaves is the study's.
    """
    for rank, trial in enumerate(ranked_trials(study), start=1):
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        value = rank_tag_value(rank)
        if not run_id or (not every and _written.get(run_id) == value):
            continue
        tracker.set_tag(run_id, TAG_RANK, value)
        _written[run_id] = value
