"""Every process draws new trials (issue 20): sequential runs, and workers whose pids are equal.

A sampler seeded once per process used to replay the study's first draws in each
new `run`, `--resume` and worker. Draws are now keyed to the trial number, which
is unique in the storage; these tests drive the real CLI in real processes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import clean_env, hvit, ok, tiny_study
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps.keys import ATTR_TARGET


def journal_study(root: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def param_sets(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials if t.state == TrialState.COMPLETE]


@pytest.mark.slow
def test_sequential_runs_draw_new_trials_and_a_fresh_study_repeats_its_first(workdir: Path) -> None:
    # Two `run --trials 1` in a row extend the study with two different configs; a new study, same file, repeats trial 0.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, max_epochs=1, train_samples=128))
    for _ in range(2):
        ok(hvit("run", "--study", "tiny.toml", "--root", "store", "--trials", "1", cwd=workdir))
    extended = param_sets(journal_study(workdir / "store", "tiny"))
    assert len(extended) == 2 and extended[0] != extended[1], extended

    ok(hvit("run", "--study", "tiny.toml", "--root", "fresh", "--trials", "1", cwd=workdir))
    assert param_sets(journal_study(workdir / "fresh", "tiny")) == extended[:1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux `unshare` is not installed")
def test_workers_with_equal_pids_in_separate_pid_namespaces_draw_differently(workdir: Path) -> None:
    # Two `worker`s, each pid 1 in a PID namespace of its own (as in containers), share one journal study:
    # every finished trial has its own params and the target is met exactly.
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"PID namespaces are not permitted here: {probe.stderr.strip()}")
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, max_epochs=1, train_samples=128))
    ok(hvit("run", "--study", "tiny.toml", "--root", "store", "--trials", "1", cwd=workdir))
    journal_study(workdir / "store", "tiny").set_user_attr(ATTR_TARGET, 5)  # what `run --trials 4` would store

    command = [sys.executable, "-m", "hvit_sweeps", "worker", "--study", "tiny.toml", "--root", "store"]
    workers = [
        subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", *command],
            cwd=workdir,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all("worker 1 on study tiny" in out for out in outputs), outputs  # both are pid 1 in their namespace

    study = journal_study(workdir / "store", "tiny")
    finished = param_sets(study)
    assert len(finished) == 5 and len(set(finished)) == 5, finished
    assert "RUNNING" not in [t.state.name for t in study.trials]
