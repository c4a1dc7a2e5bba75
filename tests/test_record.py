"""One ranking of a study's trials: every surface that lists or takes the best trials agrees, ties included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Group
from rich.table import Table

from hvit_sweeps.confirm import candidates
from hvit_sweeps.console import SweepDashboard, best_trials, sweep_summary
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_CONFIRMATION, ATTR_EXPERIMENT, ATTR_PARENT, ATTR_RUN_ID
from hvit_sweeps.report import _collect
from hvit_sweeps.retrain import best_complete_trial
from hvit_sweeps.sweep.objective import checkpoint_ranking
from hvit_sweeps.sweep.ranks import ranked_trials
from hvit_sweeps.sweep.record import StudyRecord
from hvit_sweeps.sweep.state import best_values, trial_counts
from hvit_sweeps.tracking import Tracker

LR = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)


def study_of(directions: list[str], values: list[list[float] | None]) -> optuna.Study:
    """One trial per entry, by number: values complete it, None prunes it; then one running trial."""
    study = optuna.create_study(study_name="tied", directions=directions)
    study.set_metric_names(["val_acc1", "params_m"][: len(directions)])
    study.set_user_attr(ATTR_PARENT, "p" * 32)
    study.set_user_attr(ATTR_EXPERIMENT, "1")
    for number, value in enumerate(values):
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED if value is None else TrialState.COMPLETE,
                values=value,
                params={"optim.lr": 1e-3 * (number + 1)},
                distributions={"optim.lr": LR},
                user_attrs={ATTR_RUN_ID: f"run-{number}"},
            )
        )
    study.add_trial(create_trial(state=TrialState.RUNNING, params={"optim.lr": 1e-2}, distributions={"optim.lr": LR}))
    return study


# Three trials tie at the best value: whatever the direction, every surface takes them by trial number.
TIED = {"maximize": [0.5, 0.7, 0.7, None, 0.3, 0.7, 0.5], "minimize": [0.5, 0.2, 0.2, None, 0.9, 0.2, 0.5]}
TIED_BEST = [1, 2, 5, 0, 6]


def numbers(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    return [t.number for t in trials]


def table_numbers(table: Table) -> list[int]:
    return [int(cell) for cell in table.columns[0].cells]


def report_best(study: optuna.Study, tracker: Tracker, top: int) -> list[int]:
    """The trials the report's best section lists, with the study's parent run in a real embedded store."""
    experiment = tracker.experiment_id(study.study_name)
    parent, _ = tracker.parent_run(experiment, study.study_name, tags={})
    study.set_user_attr(ATTR_PARENT, parent)
    study.set_user_attr(ATTR_EXPERIMENT, experiment)
    return numbers(_collect(study, tracker, top=top, link_base=None).best)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_tied_single_objective_surfaces_agree(
    direction: str, make_tracker: Callable[[Path], Tracker], tmp_path: Path
) -> None:
    study = study_of([direction], [None if v is None else [v] for v in TIED[direction]])
    record = StudyRecord.of(study)
    assert numbers(record.best(5)) == TIED_BEST
    assert numbers(record.best(3)) == TIED_BEST[:3]
    # show / best, and the dashboard's "best so far" table
    assert numbers(best_trials(study, top=3)) == TIED_BEST[:3]
    dashboard = SweepDashboard(study_name="tied", target=9, metric_names=["val_acc1"], top=3)
    group = dashboard.render(study)
    assert isinstance(group, Group)
    best_table = group.renderables[2]
    assert isinstance(best_table, Table) and table_numbers(best_table) == TIED_BEST[:3]
    summary = dict(zip(*(list(c.cells) for c in sweep_summary(study).columns), strict=True))
    assert summary["best val_acc1"].endswith("(trial 1)")
    assert best_values(study)["best_trial"] == 1.0
    # report, retrain, confirm, the MLflow rank tags
    assert report_best(study, make_tracker(tmp_path / "mlruns"), top=3) == TIED_BEST[:3]
    assert best_complete_trial(study).number == TIED_BEST[0]
    assert numbers(candidates(study, top=3, seeds=2)) == TIED_BEST[:3]
    assert numbers(ranked_trials(study))[:5] == TIED_BEST
    # keep_top_k: a trial that ends tied with the best ranks by its number among them, not last
    value = TIED[direction][1]
    ranked = [n for n, _ in checkpoint_ranking(record, 3, "run-3", [value])]
    assert ranked[:4] == [1, 2, 3, 5]
    late = [n for n, _ in checkpoint_ranking(record, 7, "run-7", [value])]
    assert late[:4] == [1, 2, 5, 7]
    assert dict(checkpoint_ranking(record, 7, "run-7", [value]))[5] == "run-5"


# A Pareto study: the whole set, by the first objective, ties (a duplicate point) by trial number.
def test_pareto_surfaces_agree(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> None:
    points = [[0.5, 1.0], [0.6, 2.0], [0.4, 3.0], [0.55, 0.5], None, [0.6, 2.0]]
    study = study_of(["maximize", "minimize"], points)
    front = [1, 5, 3]  # 0 is dominated by 3, 2 by every other; 1 and 5 are the same point
    record = StudyRecord.of(study)
    assert set(front) == {t.number for t in study.best_trials}
    assert numbers(record.best(1)) == front  # `top` does not cut a Pareto set
    assert numbers(best_trials(study, top=1)) == front
    group = SweepDashboard(study_name="p", target=9, metric_names=["val_acc1", "params_m"]).render(study)
    assert isinstance(group.renderables[2], Table) and table_numbers(group.renderables[2]) == front
    summary = dict(zip(*(list(c.cells) for c in sweep_summary(study).columns), strict=True))
    assert [part.split()[0] for part in summary["pareto set"].split("), ")] == [f"#{n}" for n in front]
    assert best_values(study) == {"pareto_size": 3.0}
    assert report_best(study, make_tracker(tmp_path / "mlruns"), top=1) == front
    assert numbers(ranked_trials(study))[:5] == [*front, 0, 2]
    with pytest.raises(HvitError, match="2 objectives: pick a trial of its Pareto set"):
        best_complete_trial(study)
    assert best_complete_trial(study, number=5).number == 5
    with pytest.raises(HvitError, match="single-objective"):
        candidates(study, top=2, seeds=2)


# The record's counts, names, runs and confirmed winner; the errors its readers raise.
def test_record_facts_and_errors() -> None:
    study = study_of(["maximize"], [[0.5], None, [0.7]])
    record = StudyRecord.of(study)
    assert record.counts == trial_counts(study)
    assert record.counts == {"complete": 2, "pruned": 1, "failed": 0, "running": 1, "waiting": 0, "finished": 3}
    assert record.metric_names == ("val_acc1",)
    assert record.runs() == ("1", "p" * 32)
    assert record.confirmed_winner is None and numbers(record.chosen(2)) == [2, 0]
    study.set_user_attr(ATTR_CONFIRMATION, {"winner": 0})
    assert numbers(StudyRecord.of(study).chosen(2)) == [0]
    with pytest.raises(HvitError, match=r"trial 1 of study 'tied' is not complete: pick one of 0, 2"):
        record.best_complete(1)
    assert "is not in sqlite:///x.db: pass the --tracking-uri" in str(record.parent_missing("sqlite:///x.db"))

    foreign = optuna.create_study(study_name="foreign", directions=["minimize", "minimize"])
    foreign_record = StudyRecord.of(foreign)
    assert foreign_record.metric_names == ("value 0", "value 1")  # the one fallback for unnamed objectives
    assert foreign_record.best(3) == [] and foreign_record.best_values() == {}
    with pytest.raises(HvitError, match="no MLflow runs recorded: it was not run by hvit-sweep"):
        foreign_record.runs()
    with pytest.raises(HvitError, match=r"^study 'foreign' has no complete trial: run more trials first"):
        foreign_record.best_complete()
