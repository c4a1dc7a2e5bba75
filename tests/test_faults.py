"""Faults a sweep survives (issue 20): a torn journal, a full disk, a database restart, a killed `run`.

Each fault is made real: processes killed by SIGKILL, a tmpfs that fills up, a
PostgreSQL server of the test's own that is restarted. Each test then reads the
stores a user would, and checks that no trial was lost or doubled, that nothing
is left RUNNING, and that the fault was told in one line.
"""

from __future__ import annotations

import errno
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import clean_env, hvit, ok, tiny_study
from optuna.trial import TrialState
from test_interrupts import Sweep, assert_exact, assert_nothing_running, embedded

from hvit_sweeps.sweep.faults import machine_fault
from hvit_sweeps.sweep.journal import torn_tail
from hvit_sweeps.sweep.storage import open_storage

SET_ASIDE = "journal: set aside a torn last record"
KILLS = 12  # SIGKILLs in the kill loop: each costs a writer restart (about 3 s on a busy 2-core machine)


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def sweeps() -> Iterator[list[Sweep]]:
    """`run` processes a test started; any still alive at the end is killed."""
    started: list[Sweep] = []
    yield started
    for sweep in started:
        sweep.kill()


def journal_of(root: Path) -> Path:
    return root / "optuna.journal"


def reopen(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(None, root=root))


def assert_distinct_params(study: optuna.Study) -> None:
    finished = [json.dumps(t.params, sort_keys=True) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == len(set(finished)), finished


def side_files(root: Path) -> list[Path]:
    return sorted(root.glob("optuna.journal.torn-*"))


# -- a journal that heals ------------------------------------------------------------------


def test_a_torn_last_line_is_set_aside_once_and_appends_start_on_a_new_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A last line without newline is moved to a side file on open, with one line; later appends read back whole.
    study = optuna.create_study(study_name="s", storage=open_storage(None, root=tmp_path))
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    torn = b'{"op_code":4,"worker_id":"dead","study_id":0,"datetime_sta'
    with open(journal_of(tmp_path), "ab") as handle:
        handle.write(torn)

    reopened = reopen(tmp_path, "s")
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(SET_ASIDE), lines
    [side] = side_files(tmp_path)
    assert side.read_bytes() == torn and str(side) in lines[0]
    reopened.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    again = reopen(tmp_path, "s")
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 2
    assert torn_tail(journal_of(tmp_path), parse=True) is None
    assert capsys.readouterr().err == ""  # healed once: the second open says nothing


def test_a_last_line_that_is_not_json_is_set_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A torn record with a newline glued on (what an old version appended) is not JSON: set aside, the rest reads.
    study = optuna.create_study(study_name="s", storage=open_storage(None, root=tmp_path))
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=2)
    with open(journal_of(tmp_path), "ab") as handle:
        handle.write(b'{"op_code":4,"work\n')
    assert len(reopen(tmp_path, "s").trials) == 2
    assert capsys.readouterr().err.count(SET_ASIDE) == 1
    assert side_files(tmp_path)[0].read_bytes() == b'{"op_code":4,"work\n'


def test_an_append_never_lands_on_a_line_torn_by_another_process(tmp_path: Path) -> None:
    # A process that opened the journal before another one tore it still writes on a line of its own.
    storage = open_storage(None, root=tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    with open(journal_of(tmp_path), "ab") as handle:
        handle.write(b'{"op_code":5,"half')  # torn after this process opened the file
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=2)
    assert [t.state for t in reopen(tmp_path, "s").trials] == [TrialState.COMPLETE] * 2


def test_machine_faults_are_found_through_wrapping_errors() -> None:
    # An OSError behind MLflow's or SQLAlchemy's exception, or SQLite's words for a full disk, is a machine fault.
    import sqlite3

    from sqlalchemy.exc import OperationalError

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/mlruns/optuna.journal")
        except OSError as err:
            raise RuntimeError("upload failed") from err
    except RuntimeError as wrapped:
        stated = machine_fault(wrapped, where="/x")
    assert stated == "no space left on device (ENOSPC) writing /x/mlruns/optuna.journal: free space, then continue"
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert machine_fault(full, where="/x/mlruns/mlflow.db") == (
        "no space left on device (ENOSPC) writing /x/mlruns/mlflow.db: free space, then continue"
    )
    assert "(EROFS)" in str(machine_fault(OSError(errno.EROFS, "Read-only file system"), where="/r"))
    assert machine_fault(ValueError("bad lr"), where="/x") is None
    assert machine_fault(FileNotFoundError(errno.ENOENT, "gone", "/x"), where="/x") is None


# The SIGKILL loop: writers that append through the real JournalStorage, killed at random moments.
WRITER = textwrap.dedent(
    """
    import sys, optuna
    from pathlib import Path
    from hvit_sweeps.sweep.journal import HealingJournalBackend  # what open_storage opens, without MLflow's imports
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path, tag = Path(sys.argv[1]) / "optuna.journal", sys.argv[2]
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(HealingJournalBackend(path)))
    padding = "p" * 600_000  # large records: a kill lands inside a write often
    print(f"{tag} ready", flush=True)
    while True:
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("padding", padding)
        study.tell(trial, x)
        print(f"{tag} {trial.number} {x!r}", flush=True)
    """
)


@pytest.mark.slow
def test_writers_killed_at_random_moments_never_lose_a_finished_trial(tmp_path: Path) -> None:
    # SIGKILLs of two journal writers at random moments: after each, the study reopens with every finished trial.
    rng = random.Random(20)
    root = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    optuna.create_study(study_name="s", storage=open_storage(None, root=root))
    outs = [tmp_path / f"w{i}.out" for i in range(2)]

    def start(index: int) -> subprocess.Popen[bytes]:
        with open(outs[index], "ab") as out:
            return subprocess.Popen(
                [sys.executable, str(script), str(root), f"w{index}"], stdout=out, env=clean_env(), cwd=tmp_path
            )

    writers = [start(0), start(1)]
    try:
        for kill in range(KILLS):
            victim = kill % 2
            _wait_ready(outs[victim])
            time.sleep(rng.uniform(0.05, 0.4))
            writers[victim].send_signal(signal.SIGKILL)
            writers[victim].wait()
            finished = _finished_by_writers(outs)
            study = reopen(root, "s")
            by_number = {t.number: t for t in study.trials}
            for number, x in finished.items():
                assert by_number[number].state == TrialState.COMPLETE and by_number[number].params["x"] == x
            with open(outs[victim], "a") as out:
                out.write("restarted\n")
            writers[victim] = start(victim)
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    study = reopen(root, "s")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) and numbers == sorted(numbers)
    assert_distinct_params(study)
    assert torn_tail(journal_of(root), parse=True) is None
    print(
        f"\n16 kills: {len(_finished_by_writers(outs))} trials finished, {len(side_files(root))} torn records set aside"
    )


def _wait_ready(out: Path, timeout: float = 60) -> None:
    """Until the writer last started on ``out`` has opened the study (its imports take seconds)."""
    deadline = time.monotonic() + timeout
    while out.read_text().split("restarted\n")[-1].find("ready") < 0:
        assert time.monotonic() < deadline, out.read_text()[-500:]
        time.sleep(0.05)


def _finished_by_writers(outs: list[Path]) -> dict[int, float]:
    finished = {}
    for out in outs:
        for line in out.read_text().splitlines():
            if line.count(" ") == 2:
                _, number, x = line.split()
                finished[int(number)] = float(x)
    return finished


@pytest.mark.slow
def test_show_and_resume_work_on_a_torn_journal(workdir: Path) -> None:
    # A torn last line after a real sweep: `show` sets it aside in one line, `run --resume` and `run` carry on.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, max_epochs=1, train_samples=128))
    ok(hvit("run", "--study", "tiny.toml", "--root", "store", cwd=workdir))
    torn = b'{"op_code":6,"worker_id":"x","trial_id":0,"va'
    with open(journal_of(workdir / "store"), "ab") as handle:
        handle.write(torn)

    shown = ok(hvit("show", "--study", "tiny.toml", "--root", "store", cwd=workdir))
    told = [line for line in (shown.stdout + shown.stderr).splitlines() if SET_ASIDE in line]
    assert len(told) == 1, shown.stderr
    assert side_files(workdir / "store")[0].read_bytes() == torn
    ok(hvit("run", "--study", "tiny.toml", "--root", "store", "--resume", cwd=workdir))
    ok(hvit("run", "--study", "tiny.toml", "--root", "store", "--trials", "1", cwd=workdir))
    study = reopen(workdir / "store", "tiny")
    assert_exact(study, 2)
    assert_distinct_params(study)
    assert_nothing_running(embedded(workdir / "store"))


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """A 3 MB tmpfs under the test's folder (needs root, as in CI); unmounted at the end."""
    disk = workdir / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until not one more byte fits."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
    return filler


@pytest.mark.slow
def test_a_full_disk_mid_trial_ends_in_one_line_and_resume_finishes(
    workdir: Path, small_disk: Path, sweeps: list[Sweep]
) -> None:
    # The disk under --root fills mid-trial: one error line naming ENOSPC, exit 1, no traceback, nothing RUNNING;
    # once space is back, `show` and `run --resume` work and the study reaches its exact target.
    (workdir / "tiny.toml").write_text(
        tiny_study("tiny", trials=3, max_epochs=4, train_samples=1024, extra="visuals = false")
    )
    flags = ("--study", "tiny.toml", "--root", "disk/store")
    sweeps.append(run := Sweep(workdir, *flags))
    run.wait_for("trial 1: epoch 1 done")
    filler = fill(small_disk)
    run.process.wait(timeout=120)
    output = run.stdout + run.stderr
    assert run.process.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "(ENOSPC)" in errors[0] and "disk/store" in errors[0], run.stderr[-3000:]
    assert_nothing_running(embedded(workdir / "disk" / "store"))
    stopped = reopen(workdir / "disk" / "store", "tiny")
    assert [t.state for t in stopped.trials] == [TrialState.COMPLETE, TrialState.FAIL], stopped.trials

    filler.unlink()
    ok(hvit("show", *flags, cwd=workdir))
    ok(hvit("run", *flags, "--resume", cwd=workdir, timeout=600))
    study = reopen(workdir / "disk" / "store", "tiny")
    assert_exact(study, 3)
    assert_distinct_params(study)
    assert_nothing_running(embedded(workdir / "disk" / "store"))
