"""One view of a study, read once from its Optuna storage, for every surface that lists or ranks its trials.

`show`, `best`, `report`, `best --retrain`, `best --export`, `best --confirm`, the
live dashboard and the objective's ``keep_top_k`` all rank through
:meth:`StudyRecord.best` and :meth:`StudyRecord.rank`, so a tie cannot be broken one
way on one surface and another way on the next. The rule:

- **One objective:** complete trials by their value, best first; ties by trial
  number, the earlier trial first.
- **Several objectives:** the Pareto set (Optuna's ``best_trials``), by the first
  objective, best first; ties by trial number. ``top`` does not cut it: no member
  beats another.

The MLflow view's rank tags (:mod:`hvit_sweeps.sweep.ranks`) put the same trials
first in the same order. A record reads the Optuna storage only: the study's MLflow
experiment and parent run are named by its user attributes, and whoever needs
MLflow opens it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_CONFIRMATION, ATTR_EXPERIMENT, ATTR_PARENT

__all__ = ["StudyRecord", "count_states", "metric_names"]


def metric_names(study: optuna.Study) -> list[str]:
    """The objectives' names; ``value 0``, ``value 1``, ... for a study that never set them."""
    return list(study.metric_names or [f"value {i}" for i in range(len(study.directions))])


def count_states(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials by state, as `show`, the dashboard and the parent run's ``study/`` metrics name them."""
    states = [t.state for t in trials]
    count = {state: states.count(state) for state in TrialState}
    return {
        "complete": count[TrialState.COMPLETE],
        "pruned": count[TrialState.PRUNED],
        "failed": count[TrialState.FAIL],
        "running": count[TrialState.RUNNING],
        "waiting": count[TrialState.WAITING],
        "finished": count[TrialState.COMPLETE] + count[TrialState.PRUNED],
    }


@dataclass(frozen=True)
class StudyRecord:
    """A study's trials, objectives and shared facts, as read at one moment; see the module for the ranking."""

    name: str
    directions: tuple[StudyDirection, ...]
    metric_names: tuple[str, ...]
    trials: tuple[FrozenTrial, ...]  # every trial, by number
    user_attrs: Mapping[str, Any]
    pareto: tuple[FrozenTrial, ...]  # several objectives: the Pareto set, ranked; else empty

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        directions = tuple(study.directions)
        trials = tuple(sorted(study.get_trials(deepcopy=False), key=lambda t: t.number))
        record = cls(
            name=study.study_name,
            directions=directions,
            metric_names=tuple(metric_names(study)),
            trials=trials,
            user_attrs=dict(study.user_attrs),
            pareto=(),
        )
        if not record.multi_objective:
            return record
        front = sorted(study.best_trials, key=record.key)  # only a multi-objective study asks Optuna for it
        return replace(record, pareto=tuple(front))

    # -- trials and counts ---------------------------------------------------------------

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    def in_state(self, *states: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state in states]

    @property
    def complete(self) -> list[FrozenTrial]:
        return self.in_state(TrialState.COMPLETE)

    @property
    def counts(self) -> dict[str, int]:
        return count_states(self.trials)

    def trial(self, number: int) -> FrozenTrial | None:
        return next((t for t in self.trials if t.number == number), None)

    # -- the ranking ---------------------------------------------------------------------

    def order(self, values: Sequence[float], number: int) -> tuple[float, int]:
        """The sort key of every ranking here: the first objective, best first, then the trial number."""
        sign = -1.0 if self.directions[0] == StudyDirection.MAXIMIZE else 1.0
        return sign * values[0], number

    def key(self, trial: FrozenTrial) -> tuple[float, int]:
        return self.order(trial.values, trial.number)

    def rank(self, values: Mapping[int, Sequence[float]]) -> list[int]:
        """Trial numbers best first, from their objective values: also for a trial not yet stored as complete."""
        return sorted(values, key=lambda number: self.order(values[number], number))

    def best(self, top: int) -> list[FrozenTrial]:
        """The ``top`` best complete trials, best first, or the whole Pareto set; empty before a trial completes."""
        if self.multi_objective:
            return list(self.pareto)
        return sorted(self.complete, key=self.key)[:top]

    def best_values(self) -> dict[str, float]:
        """The best value and trial, or the Pareto set's size: the parent run's ``study/`` summary."""
        chosen = self.best(1)
        if not chosen:
            return {}
        if self.multi_objective:
            return {"pareto_size": float(len(chosen))}
        return {"best_value": float(chosen[0].values[0]), "best_trial": float(chosen[0].number)}

    def best_complete(self, number: int | None = None) -> FrozenTrial:
        """The best complete trial of a single-objective study, or the complete trial ``number``."""
        complete = self.complete
        if not complete:
            raise HvitError(
                f"study {self.name!r} has no complete trial: run more trials first (hvit-sweep run --study {self.name})"
            )
        if number is not None:
            found = [t for t in complete if t.number == number]
            if not found:
                done = ", ".join(str(t.number) for t in complete[:20])
                raise HvitError(f"trial {number} of study {self.name!r} is not complete: pick one of {done}")
            return found[0]
        if self.multi_objective:
            raise HvitError(
                f"study {self.name!r} has {len(self.directions)} objectives: pick a trial of its Pareto set "
                "(hvit-sweep best) and pass its number"
            )
        return self.best(1)[0]

    @property
    def confirmed_winner(self) -> int | None:
        """The winner of the last `best --confirm`, as stored (see :func:`hvit_sweeps.confirm.stored_confirmation`)."""
        stored = self.user_attrs.get(ATTR_CONFIRMATION)
        return int(stored["winner"]) if isinstance(stored, dict) and "winner" in stored else None

    def chosen(self, top: int) -> list[FrozenTrial]:
        """What `best --export` takes: the seed-confirmed winner if one is stored, else :meth:`best`."""
        winner = self.confirmed_winner
        found = None if winner is None else self.trial(winner)
        return [found] if found is not None else self.best(top)

    # -- the MLflow side, as the study names it -------------------------------------------

    @property
    def experiment_id(self) -> str | None:
        return self.user_attrs.get(ATTR_EXPERIMENT)

    @property
    def parent_run_id(self) -> str | None:
        return self.user_attrs.get(ATTR_PARENT)

    def runs(self) -> tuple[str, str]:
        """(experiment id, parent run id); a study hvit-sweep did not run has neither and is refused."""
        if not self.parent_run_id or not self.experiment_id:
            raise self.not_tracked()
        return self.experiment_id, self.parent_run_id

    def not_tracked(self) -> HvitError:
        """The error for a study without MLflow runs: made by Optuna alone, not by hvit-sweep."""
        return HvitError(f"study {self.name!r} has no MLflow runs recorded: it was not run by hvit-sweep")

    def parent_missing(self, tracking_uri: str) -> HvitError:
        """The error for a tracking store that lacks the study's parent run: another --root or --tracking-uri."""
        return HvitError(
            f"study {self.name!r}: its MLflow run {self.parent_run_id} is not in {tracking_uri}: "
            "pass the --tracking-uri (or --root) the study was run with"
        )
