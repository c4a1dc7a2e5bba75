"""One best-first order of a study's trials, for every surface: the MLflow view, the CLI, the report.

MLflow's runs table sorts by one key, and breaks ties by start time, newest first; a
pruned trial's best value sits among complete ones. So the sweep writes each finished
trial's place as the run tag ``hvit.rank`` ("000001" is the best), and the saved view
sorts by it: complete trials first, in :class:`~hvit_sweeps.sweep.record.StudyRecord`'s
order (best value first, ties by trial number; a Pareto set before the rest); then pruned
trials by the last value they reported, ties by trial number. Failed, interrupted and
running trials get no rank and so come last. A tag, not a metric: it draws no chart.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from hvit_sweeps.keys import ATTR_RUN_ID, TAG_RANK, rank_tag_value
from hvit_sweeps.sweep.record import StudyRecord
from hvit_sweeps.tracking import Tracker

__all__ = ["ranked_trials", "write_ranks"]

# The ranks this process wrote, by run id: a trial that moves costs one call, one that stays none.
_written: dict[str, str] = {}


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first (:meth:`StudyRecord.best`, then the rest of a Pareto study's), then pruned ones."""
    record = StudyRecord.of(study)
    best = record.best(len(record.trials))
    chosen = {t.number for t in best}

    def last_report(trial: FrozenTrial) -> tuple[float, int]:
        values = trial.intermediate_values
        return record.order([values[max(values)]], trial.number) if values else (math.inf, trial.number)

    return [
        *best,
        *sorted((t for t in record.complete if t.number not in chosen), key=record.key),
        *sorted(record.in_state(TrialState.PRUNED), key=last_report),
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
