"""Pruning a multi-objective study on its first objective: the rule against Optuna's, and a real smoke study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import hvit, ok
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps.keys import ATTR_RUN_ID, TAG_PRUNED_AT, TAG_TRIAL_STATE
from hvit_sweeps.search import MedianPrunerSpec, NoPrunerSpec
from hvit_sweeps.sweep.prune import ATTR_CURVE, percentile_rule, prune_first_objective

CURVES = [[0.10, 0.20, 0.30], [0.05, 0.25, 0.35], [0.12, 0.15, 0.40]]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("percentile", [50.0, 25.0, 75.0])
@pytest.mark.parametrize("own", [[0.04, 0.10], [0.11, 0.21], [0.30, 0.16], [0.0, 0.5]])
def test_rule_decides_as_optunas_percentile_pruner(direction: str, percentile: float, own: list[float]) -> None:
    # The same values in a single-objective study, where Optuna's own pruner can judge them.
    pruner = optuna.pruners.PercentilePruner(percentile, n_startup_trials=0, n_warmup_steps=0)
    study = optuna.create_study(direction=direction, pruner=pruner)
    for curve in CURVES:
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    trial = study.ask()
    for step, value in enumerate(own, start=1):
        trial.report(value, step)
    others = [curve[len(own) - 1] for curve in CURVES]
    expected = pruner.prune(study, study.trials[-1])
    assert percentile_rule(own, others, maximize=direction == "maximize", percentile=percentile) == expected


def _complete(study: optuna.Study, curve: list[float]) -> None:
    trial = study.ask()
    trial.set_user_attr(ATTR_CURVE, {str(e): v for e, v in enumerate(curve, start=1)})
    study.tell(trial, [curve[-1], 1.0])


def test_startup_and_warmup_are_honoured() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    pruner = MedianPrunerSpec(n_startup_trials=2, n_warmup_steps=2)
    _complete(study, [0.5, 0.6, 0.7])
    trial = study.ask()
    assert prune_first_objective(trial, pruner, epoch=2, value=0.0, maximize=True) is None  # 1 < 2 complete
    _complete(study, [0.4, 0.5, 0.6])
    trial = study.ask()
    assert prune_first_objective(trial, pruner, epoch=1, value=0.0, maximize=True) is None  # epoch 1 < warm-up 2
    reason = prune_first_objective(trial, pruner, epoch=2, value=0.1, maximize=True)
    assert reason is not None and "median rule at epoch 2" in reason
    assert trial.user_attrs[ATTR_CURVE] == {"1": 0.0, "2": 0.1}  # every epoch recorded, pruned or not
    good = study.ask()
    prune_first_objective(good, pruner, epoch=1, value=0.9, maximize=True)
    assert prune_first_objective(good, pruner, epoch=2, value=0.9, maximize=True) is None
    none = NoPrunerSpec()
    assert prune_first_objective(study.ask(), none, epoch=3, value=0.0, maximize=True) is None


@pytest.mark.slow
def test_accuracy_latency_smoke_study_prunes_and_keeps_the_front_clean(workdir: Path) -> None:
    ok(hvit("run", "--study", "smoke-accuracy-latency", cwd=workdir, timeout=600))
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    study = optuna.load_study(study_name="smoke-accuracy-latency", storage=storage)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete, [t.state for t in study.trials]
    front = {t.number for t in study.best_trials}
    assert front and front <= {t.number for t in complete}  # a pruned trial never joins the front
    client = MlflowClient(f"sqlite:///{(workdir / 'mlruns' / 'mlflow.db').resolve()}")
    for trial in pruned:
        assert trial.values is None
        curve = trial.user_attrs[ATTR_CURVE]
        epoch = max(curve, key=int)
        # The decision, recomputed: worse than the median of the trials complete when it stopped.
        before = [t for t in complete if t.datetime_complete < trial.datetime_complete]
        others = [t.user_attrs[ATTR_CURVE][epoch] for t in before]
        assert len(before) >= 1 and int(epoch) >= 1  # the smoke study's n_startup_trials and n_warmup_steps
        assert percentile_rule(list(curve.values()), others, maximize=True)
        tags = client.get_run(trial.user_attrs[ATTR_RUN_ID]).data.tags
        assert tags[TAG_TRIAL_STATE] == "PRUNED" and tags[TAG_PRUNED_AT] == epoch
    for trial in complete:  # each ran its full budget and recorded every epoch
        assert sorted(trial.user_attrs[ATTR_CURVE], key=int) == ["1", "2", "3"]
    ok(hvit("report", "--study", "smoke-accuracy-latency", "--png", cwd=workdir))
    page = (workdir / "report-smoke-accuracy-latency.html").read_text()
    assert "alt='pareto_front'" in page and "measured cost" in page
