"""The study's parameter importance on its parent run in MLflow, with a note on how much it rests on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from hvit_sweeps.keys import TAG_IMPORTANCE_NOTE, importance_metric
from hvit_sweeps.sweep.importance import log_importance
from hvit_sweeps.tracking import Tracker


def test_importance_is_logged_on_the_parent_with_a_few_trials_note(
    make_tracker: Callable[[Path], Tracker], tmp_path: Path
) -> None:
    tracker = make_tracker(tmp_path / "mlruns")
    parent, _ = tracker.parent_run(tracker.experiment_id("imp"), "imp", tags={})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("optim.lr", 0, 1) * 10 + t.suggest_float("optim.wd", 0, 1) * 0.1, 8)
    importances = log_importance(tracker, study, parent)
    run = tracker.client.get_run(parent)
    assert max(importances, key=importances.__getitem__) == "optim.lr"
    assert run.data.metrics[importance_metric("optim.lr")] == importances["optim.lr"]
    assert "from 8 complete trials only" in run.data.tags[TAG_IMPORTANCE_NOTE]
    assert "importance.json" in {a.path for a in tracker.client.list_artifacts(parent)}


def test_no_importance_before_two_trials_says_why(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> None:
    tracker = make_tracker(tmp_path / "mlruns")
    parent, _ = tracker.parent_run(tracker.experiment_id("one"), "one", tags={})
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), 1)
    assert log_importance(tracker, study, parent) == {}
    assert "no importance yet: 1 complete" in tracker.client.get_run(parent).data.tags[TAG_IMPORTANCE_NOTE]
