"""One best-first order: complete trials before pruned ones, ties by trial number, in Optuna and in MLflow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hvit_sweeps.keys import ATTR_RUN_ID, TAG_RANK, TRIAL_RUN_ENDS, trial_run_name
from hvit_sweeps.mlflow_view import StudyView, view_state
from hvit_sweeps.sweep.ranks import ranked_trials, write_ranks
from hvit_sweeps.tracking import Tracker

LR = {"optim.lr": FloatDistribution(1e-4, 1e-2, log=True)}


def _study(run_ids: list[str] | None = None) -> optuna.Study:
    """0.5, 0.7, 0.7 complete; pruned at 0.9 and at 0.1; one failed (numbers 0-5)."""
    study = optuna.create_study(direction="maximize")
    ends = [
        (TrialState.COMPLETE, 0.5, {}),
        (TrialState.COMPLETE, 0.7, {}),
        (TrialState.COMPLETE, 0.7, {}),  # ties with trial 1: trial 1 ranks first
        (TrialState.PRUNED, None, {1: 0.9}),  # a pruned trial's high value does not lift it above complete ones
        (TrialState.PRUNED, None, {1: 0.1}),
        (TrialState.FAIL, None, {}),
    ]
    for index, (state, value, reports) in enumerate(ends):
        attrs = {ATTR_RUN_ID: run_ids[index]} if run_ids else {}
        study.add_trial(
            create_trial(
                state=state, value=value, params={"optim.lr": 1e-3}, distributions=LR,
                intermediate_values=reports, user_attrs=attrs,
            )
        )  # fmt: skip
    return study


def test_complete_trials_rank_above_pruned_and_ties_go_by_number() -> None:
    assert [t.number for t in ranked_trials(_study())] == [1, 2, 0, 3, 4]


def test_mlflow_sorts_the_runs_by_rank_with_unranked_last(
    make_tracker: Callable[[Path], Tracker], tmp_path: Path
) -> None:
    # The saved view's sort, through MLflow's own search: the order above, then the failed trial.
    tracker = make_tracker(tmp_path / "mlruns")
    experiment_id = tracker.experiment_id("ranks")
    runs = [tracker.client.create_run(experiment_id, run_name=trial_run_name(n)).info.run_id for n in range(6)]
    study = _study(runs)
    write_ranks(tracker, study)
    state = view_state(
        StudyView(name="r", objectives=["best/val_acc1"], ascending=False, param_keys=[], rank_tag=TAG_RANK)
    )
    assert (state["orderByKey"], state["orderByAsc"]) == (f"tags.`{TAG_RANK}`", True)
    found = tracker.client.search_runs([experiment_id], order_by=[f"tags.`{TAG_RANK}` ASC"])
    assert [r.info.run_name for r in found] == [trial_run_name(n) for n in (1, 2, 0, 3, 4, 5)]


def test_each_end_has_its_own_status_or_name(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> None:
    # Complete, pruned, failed and interrupted are told apart by status and by the name in the first column.
    tracker = make_tracker(tmp_path / "mlruns")
    experiment_id = tracker.experiment_id("ends")
    seen = set()
    for number, state in enumerate(TRIAL_RUN_ENDS):
        run_id = tracker.client.create_run(experiment_id, run_name=trial_run_name(number)).info.run_id
        tracker.end_trial(run_id, number, state)
        run = tracker.client.get_run(run_id)
        assert run.data.tags["optuna.trial_state"] == state
        seen.add((run.info.status, run.info.run_name.removeprefix(f"trial-{number}")))
    assert seen == {("FINISHED", ""), ("FINISHED", " pruned"), ("FAILED", " failed"), ("KILLED", " interrupted")}
