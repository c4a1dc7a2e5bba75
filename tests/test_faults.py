"""Faults a sweep survives (issue 20): a torn journal, a full disk, a database restart, a killed `run`.

Each fault is made real: processes killed by SIGKILL, a tmpfs that fills up, a
PostgreSQL server of the test's own that is restarted. Each test then reads the
stores a user would, and checks that no trial was lost or doubled, that nothing
is left RUNNING, and that the fault was told in one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from conftest import _wait_healthy, clean_env, free_port, hvit, ok, tiny_study
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from test_interrupts import WAIT, Sweep, assert_exact, assert_nothing_running, embedded

from hvit_sweeps import interrupt
from hvit_sweeps.keys import ATTR_EPOCH
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
    assert stated == "no space left on device (ENOSPC) writing /x/mlruns/optuna.journal: free space"
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert machine_fault(full, where="/x/mlruns/mlflow.db") == (
        "no space left on device (ENOSPC) writing /x/mlruns/mlflow.db: free space"
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
        f"\n{KILLS} kills: {len(_finished_by_writers(outs))} trials finished, {len(side_files(root))} torn records set aside"
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
    (workdir / "tiny.toml").write_text(
        tiny_study("tiny", trials=1, max_epochs=1, train_samples=128, extra="visuals = false")
    )
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
    assert "continue with: hvit-sweep run --study tiny.toml --root disk/store --resume" in errors[0], errors
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


# -- a PostgreSQL of the test's own, restarted mid-sweep ----------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnPostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port, run as the `postgres` user."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.data = folder / "data"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        for name in ("optuna", "mlflow"):
            self._as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                          "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, name: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip(f"needs root, runuser and PostgreSQL 15 under {PG_BIN} to run a server of the test's own")
    folder = Path(tempfile.mkdtemp(prefix="hvit-pg-"))  # not under pytest's root-only tmp: postgres must enter it
    folder.chmod(0o755)
    shutil.chown(folder, "postgres", "postgres")
    server = OwnPostgres(folder)
    server.init()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mlflow_on(own_postgres: OwnPostgres, tmp_path: Path) -> Iterator[str]:
    """An MLflow server on the test's own PostgreSQL (as conftest's `mlflow_server`); yields its URL."""
    port, log = free_port(), tmp_path / "mlflow.log"
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [mlflow, "server", "--backend-store-uri", own_postgres.url("mlflow"), "--serve-artifacts",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def worker_logs(root: Path, study: str) -> list[str]:
    return [p.read_text() for p in sorted((root / "logs" / study).glob("worker-*.log"))]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def rdb_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def mid_trial(url: str, name: str) -> bool:
    """Whether a trial of the study is RUNNING past its first epoch (polled once a second)."""
    time.sleep(1)
    try:
        trials = rdb_study(url, name).get_trials(states=(TrialState.RUNNING,))
    except KeyError:  # not created yet
        return False
    return any(t.user_attrs.get(ATTR_EPOCH, 0) >= 1 for t in trials)


def assert_mlflow_closed(url: str) -> None:
    from mlflow import MlflowClient

    assert_nothing_running(MlflowClient(url))


@pytest.mark.slow
def test_a_postgresql_restart_mid_sweep_is_waited_out(
    workdir: Path, own_postgres: OwnPostgres, mlflow_on: str, sweeps: list[Sweep]
) -> None:
    # PostgreSQL (Optuna's and MLflow's) restarts under a 2-worker sweep: the workers wait, say so in one line each
    # way, reconnect and finish; the exact target, no params twice, nothing RUNNING.
    (workdir / "tiny.toml").write_text(
        tiny_study("tiny", trials=4, max_epochs=8, train_samples=2048, extra="visuals = false")
    )
    storage = own_postgres.url("optuna")
    flags = ("--study", "tiny.toml", "--root", "store", "--storage", storage, "--tracking-uri", mlflow_on)
    sweeps.append(run := Sweep(workdir, *flags, "--workers", "2"))
    wait_until(lambda: mid_trial(storage, "tiny"), "a trial past its first epoch")
    own_postgres.stop()
    time.sleep(5)
    own_postgres.start()
    run.process.wait(timeout=WAIT)
    logs = worker_logs(workdir / "store", "tiny")
    output = run.stdout + run.stderr + "".join(logs)
    assert run.process.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    # Each process says it once each way, if it called the database meanwhile: `run` polls it for its
    # display; a worker in the middle of an epoch may not call it during a short restart at all.
    said = [run.stderr, *logs]
    gone = [text.count("storage: the database at") for text in said]
    back = [text.count("storage: the database answers again") for text in said]
    assert gone == back and max(gone) == 1, (gone, back, output[-4000:])
    study = rdb_study(storage, "tiny")
    assert_exact(study, 4)
    assert_distinct_params(study)
    assert_mlflow_closed(mlflow_on)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_database_that_stays_away_ends_the_sweep_and_sigterm_stops_a_waiting_worker(
    workdir: Path, own_postgres: OwnPostgres, sweeps: list[Sweep]
) -> None:
    # PostgreSQL stops for longer than HVIT_STORAGE_OUTAGE: a worker waiting on it stops within 5 s of SIGTERM, the
    # others end with one error line (exit 1); once it is back, `run --resume` reaches the exact target.
    (workdir / "tiny.toml").write_text(
        tiny_study("tiny", trials=3, max_epochs=8, train_samples=2048, extra="visuals = false")
    )
    storage = own_postgres.url("optuna")
    flags = ("--study", "tiny.toml", "--root", "store", "--storage", storage)
    sweeps.append(run := Sweep(workdir, *flags, "--workers", "2", env={"HVIT_STORAGE_OUTAGE": "20"}))
    wait_until(lambda: mid_trial(storage, "tiny"), "a trial past its first epoch")
    workers = children(run.process.pid)
    own_postgres.stop()
    wait_until(lambda: "not answering" in worker_logs(workdir / "store", "tiny")[0], "worker 0 waiting", timeout=60)
    sent = time.monotonic()
    os.kill(workers[0], signal.SIGTERM)
    wait_until(lambda: not alive(workers[0]), "worker 0 gone after SIGTERM", timeout=30)
    seconds = time.monotonic() - sent
    print(f"\nSIGTERM to a worker waiting on the database: gone after {seconds:.1f} s")
    assert seconds < 5, seconds

    run.process.wait(timeout=WAIT)
    output = run.stdout + run.stderr
    assert run.process.returncode == 1, output[-3000:]
    assert "Traceback" not in output + "".join(worker_logs(workdir / "store", "tiny")), output[-3000:]
    said = [line for line in run.stderr.splitlines() if line.strip()]  # gone, then the error: nothing else
    assert len(said) == 2 and "is not answering" in said[0], run.stderr[-3000:]
    assert said[1].startswith("error: ") and "has not answered for" in said[1], run.stderr[-3000:]
    assert said[1].endswith("--resume"), said[1]
    own_postgres.start()
    ok(hvit("run", *flags, "--resume", cwd=workdir, timeout=600))
    study = rdb_study(storage, "tiny")
    assert_exact(study, 3)
    assert_distinct_params(study)
    assert_nothing_running(embedded(workdir / "store"))


@pytest.mark.slow
def test_the_workers_of_a_killed_run_end_with_it(workdir: Path, sweeps: list[Sweep]) -> None:
    # SIGKILL of `run --workers 2` (a scheduler's hard stop): its workers stop within seconds, no orphan keeps
    # training; `run --resume` then reaches the exact target with nothing RUNNING.
    (workdir / "tiny.toml").write_text(
        tiny_study("tiny", trials=3, max_epochs=8, train_samples=2048, extra="visuals = false")
    )
    flags = ("--study", "tiny.toml", "--root", "store")
    sweeps.append(run := Sweep(workdir, *flags, "--workers", "2"))
    wait_until(lambda: len(worker_logs(workdir / "store", "tiny")) == 2, "two workers")
    workers = children(run.process.pid)
    # Both workers mid-trial: a worker still loading its data has no batch to stop at (seen on a loaded machine).
    wait_until(lambda: mid_trial_journal(workdir / "store", "tiny", running=2), "each worker's trial past epoch 1")
    sent = time.monotonic()
    run.process.send_signal(signal.SIGKILL)
    run.process.wait()
    wait_until(lambda: not any(alive(pid) for pid in workers), "the workers gone", timeout=60)
    seconds = time.monotonic() - sent
    print(f"\nworkers of a SIGKILLed run: gone after {seconds:.1f} s")
    assert seconds < 10, seconds
    logs = worker_logs(workdir / "store", "tiny")
    assert all(log.count("stopping at the end of this batch") == 1 for log in logs), logs

    ok(hvit("run", *flags, "--resume", cwd=workdir, timeout=600))
    study = reopen(workdir / "store", "tiny")
    assert_exact(study, 3)
    assert_distinct_params(study)
    assert_nothing_running(embedded(workdir / "store"))


def mid_trial_journal(root: Path, name: str, *, running: int = 1) -> bool:
    """At least ``running`` trials are RUNNING and past their first epoch."""
    time.sleep(0.5)
    try:
        trials = optuna.load_study(
            study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal_of(root))))
        ).get_trials(states=(TrialState.RUNNING,))
    except KeyError:
        return False
    return sum(t.user_attrs.get(ATTR_EPOCH, 0) >= 1 for t in trials) >= running


# -- stop requests while waiting ----------------------------------------------------------------


def test_the_first_sigterm_ends_a_wait_on_a_server_at_once() -> None:
    # Between batches a first SIGTERM only asks; during a wait on a server it raises at once, and no new wait starts.
    told: list[str] = []
    with interrupt.graceful_interrupts(told.append):
        with pytest.raises(interrupt.StopRequested), interrupt.waiting_on_server():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises inside the sleep
        assert interrupt.requested() and not told
        with pytest.raises(interrupt.StopRequested):
            interrupt.set_waiting_on_server(True)
    assert not interrupt.requested()


def test_a_worker_whose_run_is_gone_is_asked_to_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker started by `run` (HVIT_PARENT_PID) sees a changed parent as a stop request at its next check.
    monkeypatch.setenv(interrupt.PARENT_ENV, str(os.getppid()))
    assert not interrupt.orphaned()
    interrupt.check()
    monkeypatch.setenv(interrupt.PARENT_ENV, str(os.getppid() + 1_000_000))
    assert interrupt.orphaned() and interrupt.requested()
    with pytest.raises(interrupt.StopRequested, match="started this worker ended"):
        interrupt.check()


def test_a_trial_its_worker_queued_is_not_retried_again_when_found_dead() -> None:
    # A stopped worker queued its trial's retry, then died before recording the FAIL: the next `run` finds the
    # trial RUNNING with a dead owner, fails it, and does not queue a second copy of the same config.
    from hvit_sweeps.sweep.storage import already_retried, stale_handler

    study = optuna.create_study(direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    frozen = study.trials[trial.number]
    assert not already_retried(study, trial.number)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(study, frozen)  # what the worker queued
    assert already_retried(study, trial.number)

    class NoTracking:
        def end_trial(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the trial has no run")

    stale_handler(NoTracking())(study, frozen)  # type: ignore[arg-type]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [frozen.params]
