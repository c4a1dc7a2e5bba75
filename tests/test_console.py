"""What a person reads: metric formatting, trial tables, and the sweep's plain-line log."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import optuna
import pytest
from rich.console import Console

import hvit_sweeps.console as console_module
from hvit_sweeps.console import (
    SweepDashboard,
    best_trials,
    epoch_time_left,
    short_params,
    sweep_summary,
    trial_values,
    trials_table,
)
from hvit_sweeps.keys import ATTR_SURPLUS

LR = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> StringIO:
    """The module's console redirected to a buffer that is not a terminal, as in a pipe or CI log."""
    out = StringIO()
    monkeypatch.setattr(console_module, "console", Console(file=out, force_terminal=False, width=200, highlight=False))
    return out


def study_with(*values: float | None, directions: tuple[str, ...] = ("maximize",)) -> optuna.Study:
    """A study with one trial per value: a float completes it (after two epoch reports), None leaves it running."""
    study = optuna.create_study(directions=list(directions))
    for value in values:
        trial = study.ask({"optim.lr": LR})
        if value is None:
            continue
        if len(directions) > 1:  # Optuna takes epoch reports from single-objective trials only
            study.tell(trial, [value] * len(directions))
            continue
        trial.report(value / 2, 1)
        trial.report(value, 2)
        study.tell(trial, value)
    return study


# Accuracies read as percentages, lr in scientific notation, rates with thousands separators.
# A finished trial shows its objective values; several objectives are comma-separated.
def test_trial_values_of_complete_trials() -> None:
    single = study_with(0.25).trials[0]
    assert trial_values(single, ["val_acc1"]) == "25.00%"
    pareto = study_with(0.5, directions=("maximize", "minimize")).trials[0]
    assert trial_values(pareto, ["val_acc1", "val_loss"]) == "50.00%, 0.5000"


# A running trial shows its last reported value and the epoch it came from; before any report, nothing.
def test_trial_values_of_running_trials() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    assert trial_values(study.trials[0], ["val_acc1"]) == ""
    trial.report(0.2, 1)
    trial.report(0.3, 2)
    assert trial_values(study.trials[0], ["val_acc1"]) == "30.00% at epoch 2 (running)"


# Params drop their section prefix and floats keep three significant digits.
def test_short_params() -> None:
    assert short_params({"optim.lr": 0.0012345, "model.depth": 2}) == "lr=0.00123 depth=2"


# The trials table has one row per trial under fixed columns, the objective column named after the metrics.
def test_trials_table_columns_and_row() -> None:
    study = study_with(0.25)
    table = trials_table(study.trials, title="t", metric_names=["val_acc1", "params_m"])
    headers = ["#", "state", "val_acc1 / params_m", "epochs", "duration", "cost", "params"]
    assert [c.header for c in table.columns] == headers
    number, state, values, epochs, duration, cost, params = (list(c.cells)[0] for c in table.columns)
    lr = study.trials[0].params["optim.lr"]
    assert (number, values, epochs, cost, params) == ("0", "25.00%", "2", "", f"lr={lr:.3g}")  # no cost recorded
    assert "COMPLETE" in state and duration.endswith("s")


# Single objective: the best trials by value, best first; several objectives: the Pareto set, by its
# first objective then trial number (StudyRecord's one rule).
def test_best_trials() -> None:
    assert [t.number for t in best_trials(study_with(0.2, 0.5, 0.3), top=2)] == [1, 2]
    assert [t.number for t in best_trials(study_with(0.2, None), top=2)] == [0]
    pareto = study_with(0.2, 0.5, directions=("maximize", "maximize"))
    assert [t.number for t in best_trials(pareto, top=1)] == [1]


# The summary counts trials by state (surplus failures said apart) and names the best.
def test_sweep_summary_counts_and_best() -> None:
    study = study_with(0.4, 0.6)
    surplus = study.ask()
    surplus.set_user_attr(ATTR_SURPLUS, True)
    study.tell(surplus, state=optuna.trial.TrialState.FAIL)
    what, value = (list(c.cells) for c in sweep_summary(study, metric_names=["val_acc1"]).columns)
    assert dict(zip(what, value, strict=True)) == {
        "complete": "2",
        "pruned": "0",
        "fail": "1 (1 surplus, never trained)",
        "running": "0",
        "best val_acc1": "60.00% (trial 1)",
        "best params": short_params(study.trials[1].params),
    }


# Without a terminal the dashboard prints the study summary as a plain line, again only when it changes.
def test_dashboard_prints_the_summary_only_when_it_changes(plain: StringIO) -> None:
    study = study_with(0.4)
    dashboard = SweepDashboard(study_name="s", target=3, metric_names=["val_acc1"])
    assert dashboard.live is None
    dashboard.refresh(study)
    dashboard.refresh(study)
    study.tell(study.ask(), 0.6)
    dashboard.refresh(study)
    assert plain.getvalue().splitlines() == [
        "study s: 1/3 trials (1 complete, 0 pruned, 0 failed); best 40.00% (trial 0)",
        "study s: 2/3 trials (2 complete, 0 pruned, 0 failed); best 60.00% (trial 1)",
    ]


# A trial's first status announces it with its params; epoch progress is paced, phases and epoch ends always shown.
def test_dashboard_plain_trial_lines(plain: StringIO) -> None:
    study = study_with(None)
    lr = study.trials[0].params["optim.lr"]
    dashboard = SweepDashboard(study_name="s", target=1, metric_names=["val_acc1"])
    dashboard.set_status(study, 0, "loading data")
    dashboard.set_status(study, 0, "epoch 1: batch 1 of 9")  # within the pace: not printed
    dashboard.set_status(study, 0, "building model")
    dashboard.set_status(study, 0, "epoch 1 done: val_acc1 10.00%", force=True)
    assert plain.getvalue().splitlines() == [
        f"trial 0 started: lr={lr:.3g}",
        "trial 0: loading data",
        "trial 0: building model",
        "trial 0: epoch 1 done: val_acc1 10.00%",
    ]


def test_a_log_keeps_long_lines_whole() -> None:
    # Piped (a log, CI), a long line such as a trial's params is printed whole, not folded at 80 columns.
    code = "from hvit_sweeps.console import console; console.print('trial 0 started: ' + 'depth_0=4 ' * 20)"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.count("\n") == 1 and len(out) > 200, out


@pytest.mark.parametrize(
    ("elapsed", "batch", "num_batches", "shown"),
    [
        (30.0, 10, 100, "~4 min"),  # 3 s a batch, 90 batches left
        (10.0, 10, 50, "~40 s"),
        (3600.0, 10, 100, "~9.0 h"),
        (30.0, 1, 100, ""),  # the first batch carries the warm-up: too early to say
        (2.0, 10, 100, ""),  # a fast epoch needs no estimate
        (30.0, 100, 100, ""),  # the epoch is done
    ],
)
def test_epoch_time_left(elapsed: float, batch: int, num_batches: int, shown: str) -> None:
    assert epoch_time_left(elapsed, batch, num_batches) == shown


def test_a_stopped_trial_is_not_shown_as_running() -> None:
    # An interrupted (Optuna FAIL) or pruned trial's last report says why it has no more, not "(running)".
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from hvit_sweeps.console import trial_values

    def ended(state: TrialState) -> str:
        trial = create_trial(
            state=state,
            params={"lr": 0.1},
            distributions={"lr": FloatDistribution(0, 1)},
            intermediate_values={1: 0.04},
        )
        return trial_values(trial, ["val_acc1"])

    assert ended(TrialState.FAIL) == "4.00% at epoch 1 (then stopped)"
    assert ended(TrialState.PRUNED) == "4.00% at epoch 1 (pruned)"
