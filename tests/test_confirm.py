"""`best --confirm`: the statistics, and a real 6-trial smoke study whose top 2 are replicated with 2 seeds."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest
from conftest import assert_one_line_error, hvit, ok
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from scipy import stats  # an MLflow dependency: an independent check of our t-table and Welch interval

from hvit_sweeps.confirm import ATTR_CONFIRMATION, ROLE_REPLICATE, Ranked, candidates, compare, rank, t_975
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_PARENT, TAG_ROLE, TAG_SOURCE_TRIAL
from hvit_sweeps.sweep.state import best_trials


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 29, 30])
def test_t_table_matches_scipy(df: int) -> None:
    assert t_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    assert t_975(df + 0.7) == t_975(df)  # Welch's fractional df: the lower row, a wider interval


@pytest.mark.parametrize("df", [31, 45, 61, 500])
def test_t_between_rows_errs_wide_by_little(df: int) -> None:
    assert 1 <= t_975(df) / stats.t.ppf(0.975, df) < 1.02


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of means and its 95% half-width, from scipy (df rounded down like the table)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return statistics.fmean(a) - statistics.fmean(b), stats.t.ppf(0.975, math.floor(df)) * math.sqrt(va + vb)


def test_compare_states_a_win_only_when_the_interval_excludes_zero() -> None:
    a, b = Ranked(12, [0.80, 0.81, 0.82]), Ranked(7, [0.70, 0.71, 0.73])
    diff, half = welch(a.values, b.values)
    statement, separated = compare(a, b, metric="val_acc1", maximize=True)
    assert separated and statement == f"trial 12 beats trial 7 by {100 * diff:.2f} ± {100 * half:.2f} points"
    close = Ranked(3, [0.50, 0.60])
    statement, separated = compare(close, Ranked(4, [0.54, 0.55]), metric="val_acc1", maximize=True)
    assert not separated and statement.startswith("trial 3 and trial 4 cannot be told apart (")
    # Minimised: the lower mean wins, stated in the metric's own unit.
    low = rank({1: [0.9, 0.91, 0.92], 2: [0.5, 0.51, 0.52]}, metric="val_loss", maximize=False, seeds=[1, 2, 3])
    assert low.winner == 2 and low.statement.startswith("trial 2 beats trial 1 by 0.40 ± ")
    with pytest.raises(HvitError, match="at least 2 trials"):
        rank({1: [0.5, 0.6]}, metric="val_acc1", maximize=True, seeds=[1, 2])


@pytest.mark.slow
def test_confirm_top_two_of_a_smoke_study(workdir: Path) -> None:
    ok(hvit("run", "--study", "smoke", "--trials", "6", cwd=workdir, timeout=600))
    root = workdir / "mlruns"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    study = optuna.load_study(study_name="smoke", storage=storage)
    top2 = [t.number for t in best_trials(study, top=2)]
    refused = hvit("best", "--study", "smoke", "--confirm", cwd=workdir)  # --top defaults to 1
    assert_one_line_error(refused, "--confirm needs --top 2 or more")
    assert "replicates" not in refused.stdout  # refused before any progress
    out = ok(hvit("best", "--study", "smoke", "--confirm", "--top", "2", "--seeds", "2", cwd=workdir)).stdout
    record = optuna.load_study(study_name="smoke", storage=storage).user_attrs[ATTR_CONFIRMATION]
    assert sorted(map(int, record["trials"])) == sorted(top2) and record["seeds"] == [100, 101]

    # The replicates: child runs of the study's run, role replicate, never tested.
    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_REPLICATE}'")
    assert len(runs) == 4
    logged: dict[int, list[float]] = {}
    for run in sorted(runs, key=lambda r: int(r.data.tags["hvit.replicate_seed"])):
        assert run.data.tags["mlflow.parentRunId"] == study.user_attrs[ATTR_PARENT]
        assert run.info.status == "FINISHED" and not any(k.startswith("test_") for k in run.data.metrics)
        logged.setdefault(int(run.data.tags[TAG_SOURCE_TRIAL]), []).append(run.data.metrics["best/val_acc1"])
    assert logged == {int(k): v for k, v in record["trials"].items()}

    # The statement, recomputed from the replicate values with scipy.
    (w, wv), (r, rv) = sorted(logged.items(), key=lambda kv: (-statistics.fmean(kv[1]), kv[0]))
    diff, half = welch(wv, rv) if statistics.variance(wv) + statistics.variance(rv) > 0 else (0.0, 0.0)
    size = f"{100 * diff:.2f} ± {100 * half:.2f} points"
    expected = (
        f"trial {w} beats trial {r} by {size}"
        if diff > half
        else f"trial {w} and trial {r} cannot be told apart ({size})"
    )
    assert record["winner"] == w and record["statement"] == expected
    assert expected in " ".join(out.split())

    # show lists it; best --export takes the confirmed winner and says so.
    assert "seed confirmation" in ok(hvit("show", "--study", "smoke", cwd=workdir)).stdout
    exported = ok(hvit("best", "--study", "smoke", "--export", "out", cwd=workdir)).stdout
    assert f"taking trial {w}, the seed-confirmed winner" in " ".join(exported.split())
    import json

    config = json.loads((workdir / "out" / "config.json").read_text())
    winner = next(t for t in study.trials if t.number == w)
    assert config["optim"]["lr"] == pytest.approx(winner.params["optim.lr"])


def test_a_trial_better_than_the_confirmed_ones_is_pointed_out(capsys: pytest.CaptureFixture[str]) -> None:
    from hvit_sweeps.app.best import warn_if_unconfirmed
    from hvit_sweeps.sweep.record import StudyRecord

    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    confirmed = rank({0: [0.5, 0.52], 1: [0.6, 0.58]}, metric="val_acc1", maximize=True, seeds=[100, 101])
    warn_if_unconfirmed(StudyRecord.of(study), confirmed)
    assert "was not in the confirmation" not in capsys.readouterr().out
    study.add_trial(optuna.trial.create_trial(value=0.7))
    warn_if_unconfirmed(StudyRecord.of(study), confirmed)
    assert "trial 2, now the best by its single run, was not in the confirmation" in " ".join(
        capsys.readouterr().out.split()
    )


def test_studies_that_cannot_be_confirmed_are_refused() -> None:
    pareto = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(HvitError, match="single-objective"):
        candidates(pareto, top=2, seeds=2)
    one = optuna.create_study(direction="maximize")
    one.add_trial(optuna.trial.create_trial(value=0.5))
    with pytest.raises(HvitError, match="1 complete trial"):
        candidates(one, top=3, seeds=2)
    one.add_trial(optuna.trial.create_trial(value=0.6))
    with pytest.raises(HvitError, match="no MLflow runs"):
        candidates(one, top=3, seeds=2)
