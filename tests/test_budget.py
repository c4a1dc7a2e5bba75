"""Study budgets: parsing, the device-time count, and a real budgeted run that stops on time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import optuna
import pytest
from conftest import assert_one_line_error, cli, hvit, ok, tiny_study
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps.budget import (
    ATTR_BUDGET,
    ATTR_STOPPED,
    Budget,
    budget_line,
    budget_spent,
    budget_used,
    parse_budget,
    settle_budget,
)
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_COST


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("2h", Budget("wall", 7200, "2h")),
        ("90m", Budget("wall", 5400, "90m")),
        ("45s", Budget("wall", 45, "45s")),
        ("1.5d", Budget("wall", 129600, "1.5d")),
        ("10gpu-h", Budget("device", 36000, "10gpu-h")),
        ("30device-m", Budget("device", 1800, "30device-m")),
        ("0.5GPU-H", Budget("device", 1800, "0.5GPU-H")),
    ],
)
def test_parse_budget(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["", "2", "h", "0h", "-1h", "2 hours", "10gpu", "1e3s", "2h30m"])
def test_bad_budget_is_refused(text: str) -> None:
    with pytest.raises(HvitError, match="--budget"):
        parse_budget(text)


def test_bad_budget_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    assert_one_line_error(
        cli("run", "--study", "smoke", "--root", str(tmp_path / "r"), "--budget", "2 hours"), "--budget"
    )
    assert not (tmp_path / "r").exists()


def _finished(study: optuna.Study, start: float, seconds: float, cost: float | None) -> None:
    trial = optuna.trial.create_trial(
        value=0.5,
        params={},
        distributions={},
        user_attrs={ATTR_COST: {"device_seconds": cost}} if cost is not None else {},
    )
    trial.datetime_start = dt.datetime.fromtimestamp(start)
    trial.datetime_complete = dt.datetime.fromtimestamp(start + seconds)
    study.add_trial(trial)


def test_device_budget_sums_measured_cost_of_trials_since_it_was_set() -> None:
    study = optuna.create_study(direction="maximize")
    settle_budget(study, parse_budget("1gpu-m"))
    set_at = study.user_attrs[ATTR_BUDGET]["set_at"]
    _finished(study, set_at - 100, 50, cost=40.0)  # before the budget: not counted
    _finished(study, set_at + 1, 30, cost=25.0)  # measured: its device seconds
    _finished(study, set_at + 40, 20, cost=None)  # not measured: wall x 1 device
    assert budget_used(study, now=set_at + 100) == (45.0, 2)
    assert budget_spent(study) is None  # 45 of 60 s
    _finished(study, set_at + 60, 20, cost=16.0)
    reason = budget_spent(study)
    assert reason is not None and "1gpu-m used" in reason and "after 3 trial(s)" in reason
    assert study.user_attrs[ATTR_STOPPED]["trials"] == 3
    line = budget_line(study)
    assert line is not None and "used 61.0 device s, 102%, by 3 trial(s); stopped:" in line


@pytest.mark.slow
def test_budgeted_run_stops_within_one_trial_of_its_budget(workdir: Path) -> None:
    # Trials of about 1-2 s under a 6 s wall budget and a target far out of reach.
    (workdir / "b.toml").write_text(tiny_study("budgeted", trials=200, max_epochs=2, extra="visuals = false"))
    out = ok(hvit("run", "--study", "b.toml", "--budget", "6s", cwd=workdir)).stdout
    assert "budget: 6s (wall time), from now" in out
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    study = optuna.load_study(study_name="budgeted", storage=storage)
    trials = [t for t in study.trials if t.state != TrialState.FAIL]
    set_at = study.user_attrs[ATTR_BUDGET]["set_at"]
    stopped = study.user_attrs[ATTR_STOPPED]
    assert 1 <= stopped["trials"] == len(trials) < 200, (stopped, len(trials))  # the exact count, recorded
    starts = [t.datetime_start.timestamp() - set_at for t in trials]
    ends = [t.datetime_complete.timestamp() - set_at for t in trials]
    longest = max(t.duration.total_seconds() for t in trials)
    assert max(starts) < 6  # no trial started after the budget
    assert stopped["used_seconds"] >= 6 and max(ends) <= 6 + longest  # stopped within one trial's length
    shown = ok(hvit("show", "--study", "budgeted", cwd=workdir)).stdout
    assert f"by {len(trials)} trial(s); stopped: budget 6s used" in " ".join(shown.split())
    # --resume keeps the used budget: nothing more runs.
    ok(hvit("run", "--study", "b.toml", "--resume", cwd=workdir))
    assert len(optuna.load_study(study_name="budgeted", storage=storage).trials) == len(study.trials)


@pytest.mark.slow
def test_device_budget_counts_the_trials_measured_device_seconds(workdir: Path) -> None:
    # 3 device-seconds (CPU time here) of trials that each take well under that.
    (workdir / "d.toml").write_text(tiny_study("device-budgeted", trials=200, max_epochs=1, extra="visuals = false"))
    ok(hvit("run", "--study", "d.toml", "--budget", "0.05gpu-m", cwd=workdir))
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    study = optuna.load_study(study_name="device-budgeted", storage=storage)
    costs = [t.user_attrs[ATTR_COST]["device_seconds"] for t in study.trials if t.state == TrialState.COMPLETE]
    stopped = study.user_attrs[ATTR_STOPPED]
    assert stopped["trials"] == len(study.trials) == len(costs) < 200
    assert stopped["used_seconds"] == pytest.approx(sum(costs))
    assert sum(costs[:-1]) < 3 <= sum(costs)  # the last trial is the one that used the budget up
