"""Distributed sweeps on the team stack's real parts: PostgreSQL-backed Optuna and a real MLflow server.

Each test gets its own fresh Optuna database; the MLflow server (on its own
database) is shared by the session, and each test uses its own study name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import hvit, ok, tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # PostgreSQL, a real MLflow server and CLI subprocesses


def runs_of(server: str, study: str) -> tuple[list, list]:
    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`hvit.study` = '{study}'")
    parents = [r for r in runs if r.data.tags["hvit.role"] == "study"]
    children = [r for r in runs if r.data.tags["hvit.role"] == "trial"]
    return parents, children


def test_three_workers_on_postgres_and_mlflow_server(
    workdir: Path, make_database: Callable[[], str], mlflow_server: str
) -> None:
    # 3 worker processes share a PostgreSQL study: exactly 9 finished trials, 9 child runs under one parent, none RUNNING.
    storage = make_database()
    ok(
        hvit(
            "run",
            "--study",
            "smoke",
            "--study-name",
            "dist",
            "--trials",
            "9",
            "--workers",
            "3",
            "--storage",
            storage,
            "--tracking-uri",
            mlflow_server,
            cwd=workdir,
            timeout=900,
        )
    )
    study = optuna.load_study(study_name="dist", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 9
    assert len({t.number for t in study.trials}) == len(study.trials)
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == len(params), params  # no worker repeats another's draws
    parents, children = runs_of(mlflow_server, "dist")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trained = [r for r in children if r.data.tags["optuna.trial_state"] != "FAIL"]
    assert len(trained) == 9
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all("val_acc1" in r.data.metrics for r in trained)
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert {t.user_attrs["mlflow_run_id"] for t in finished} == {r.info.run_id for r in trained}


def test_killed_worker_trial_is_failed_retried_and_closed(
    workdir: Path, make_database: Callable[[], str], mlflow_server: str
) -> None:
    # SIGKILL mid-trial, then resume: the heartbeat fails the trial, a retry runs it, its MLflow run ends FAILED.
    storage = make_database()
    (workdir / "slow.toml").write_text(tiny_study("killed", max_epochs=6, train_samples=640))
    common = ["--study", "slow.toml", "--storage", storage, "--tracking-uri", mlflow_server, "--heartbeat", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HVIT_STORAGE")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "hvit_sweeps", "worker", *common],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = _wait_for_running_epoch(storage, "killed", worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the grace period of 3 heartbeats

    ok(hvit("run", *common, "--resume", cwd=workdir, timeout=600))
    study = optuna.load_study(study_name="killed", storage=storage)
    by_number = {t.number: t for t in study.trials}
    assert by_number[victim].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == by_number[victim].params
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2

    client = MlflowClient(tracking_uri=mlflow_server)
    killed_run = client.get_run(by_number[victim].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert "stale" in killed_run.data.tags["hvit.failure_reason"]
    parents, children = runs_of(mlflow_server, "killed")
    assert [r for r in parents + children if r.info.status == "RUNNING"] == []


def _wait_for_running_epoch(storage: str, name: str, worker: subprocess.Popen, timeout: float = 180) -> int:
    """Poll the storage until a trial of `name` has reported an epoch; return its number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited before it could be killed"
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            time.sleep(0.5)
            continue
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("hvit.epoch", 0) >= 1:
                return trial.number
        time.sleep(0.5)
    pytest.fail("no trial reached its first epoch in time")
