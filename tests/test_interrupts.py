"""Interrupts, kills, outages and bad values, as real processes (issue 14).

A sweep is started as a subprocess in its own session, its plain (non-terminal)
output goes to a file, and the test waits for a line there before it signals the
process. Afterwards it reads the stores a user would: the Optuna journal and the
MLflow runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import _wait_healthy, assert_one_line_error, clean_env, cli, free_port, hvit, ok, tiny_study
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps.keys import ATTR_RUN_ID, ATTR_TARGET, ROLE_STUDY, TAG_ROLE, TAG_TRIAL_STATE

BIN = str(Path(sys.executable).parent)  # where `hvit-sweep` and `mlflow` are installed
# A trial long enough that a signal lands inside an epoch: 57 batches (~10 s) each on this 2-core machine.
# Four epochs of about 1.7 s here: a signal sent just after epoch 1 lands mid-trial even on a much faster CPU,
# where two epochs could pass between the log line and the signal.
SLOW_TRIAL = {"max_epochs": 4, "train_samples": 4096}
WAIT = 300  # seconds: generous, the machine is shared and busy


# -- helpers ------------------------------------------------------------------------------


class Sweep:
    """A `run` subprocess in its own session, with stdout and stderr in files."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None, tag: str = "run") -> None:
        self.out, self.err = cwd / f"{tag}.out", cwd / f"{tag}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hvit_sweeps", "run", *args],
                cwd=cwd,
                env={**clean_env(), **(env or {})},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, text: str, timeout: float = WAIT) -> None:
        """Poll the output file until ``text`` appears; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout:
                return
            if self.process.poll() is not None:
                pytest.fail(
                    f"exited {self.process.returncode} before {text!r}:\n{self.stdout[-2000:]}{self.stderr[-2000:]}"
                )
            time.sleep(0.2)
        pytest.fail(f"no {text!r} in {timeout} s:\n{self.stdout[-2000:]}")

    def mid_epoch(self) -> None:
        """Wait until trial 0 is inside its second epoch (its first has ended, three more follow)."""
        self.wait_for("trial 0: epoch 1 done")
        time.sleep(0.3)
        assert self.process.poll() is None

    def signal_and_time(self, sig: int, timeout: float = 120) -> float:
        """Send ``sig`` to the process; seconds until it exited."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(timeout=timeout)
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def sweeps() -> Iterator[list[Sweep]]:
    """Sweeps a test started; any still alive at the end is killed."""
    started: list[Sweep] = []
    yield started
    for sweep in started:
        sweep.kill()


def journal_study(root: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def all_runs(client: MlflowClient) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def embedded(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root.resolve()}/mlflow.db")


def assert_nothing_running(client: MlflowClient) -> None:
    running = [
        (r.info.run_name, r.data.tags.get(TAG_TRIAL_STATE)) for r in all_runs(client) if r.info.status == "RUNNING"
    ]
    assert not running, running


def assert_exact(study: optuna.Study, target: int) -> None:
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)), numbers
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == target, states
    assert "RUNNING" not in states and "WAITING" not in states, states


def assert_retried_once(study: optuna.Study, number: int) -> None:
    """Trial ``number`` was stopped, and exactly one later trial ran its params again, to completion."""
    stopped = study.trials[number]
    again = [t for t in study.trials if t.number != number and t.params == stopped.params]
    assert [t.state for t in again] == [TrialState.COMPLETE], [(t.number, t.state, t.params) for t in study.trials]


def resume_hint(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("continue with: ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0].removeprefix("continue with: ")


def shell(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A printed command run verbatim, as a user would paste it."""
    env = {**clean_env(), **(env or {}), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def assert_one_line_fault(result: subprocess.CompletedProcess, phrase: str) -> None:
    """A machine fault: exit 1, one ``error:`` line on stderr that contains ``phrase``, and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:] + result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], result.stderr


# -- signals ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_mid_epoch_stops_in_seconds_and_the_printed_resume_finishes(workdir: Path, sweeps: list[Sweep]) -> None:
    # SIGINT mid-epoch: exit 130 within seconds; the printed "continue with" line, run verbatim, reaches the exact target.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, **SLOW_TRIAL))
    flags = ("--study", "tiny.toml", "--study-name", "dw-synth", "--root", "store", "--dataset", "synthetic")
    sweeps.append(run := Sweep(workdir, *flags))
    run.mid_epoch()
    seconds = run.signal_and_time(signal.SIGINT)
    print(f"\nCtrl-C response: {seconds:.2f} s from SIGINT to exit")
    output = run.stdout + run.stderr
    assert run.process.returncode == 130, output[-3000:]
    assert seconds < 10, seconds
    assert "stopping at the end of this batch" in output and "Traceback" not in output
    hint = resume_hint(run.stdout)
    for flag in ("--study-name dw-synth", "--root store", "--dataset synthetic", "--resume"):
        assert flag in hint, hint

    ok(shell(hint, workdir))
    study = journal_study(workdir / "store", "dw-synth")
    assert_exact(study, 1)
    client = embedded(workdir / "store")
    assert_nothing_running(client)
    interrupted = client.get_run(study.trials[0].user_attrs[ATTR_RUN_ID])
    assert study.trials[0].state == TrialState.FAIL
    assert interrupted.info.status == "KILLED" and interrupted.data.tags[TAG_TRIAL_STATE] == "INTERRUPTED"
    assert interrupted.info.run_name.endswith(" interrupted")
    assert_retried_once(study, 0)


@pytest.mark.slow
def test_sigterm_mid_epoch_stops_cleanly(workdir: Path, sweeps: list[Sweep]) -> None:
    # SIGTERM (docker stop) mid-epoch: exit 130, the trial and the study's parent run are closed, none left RUNNING.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, **SLOW_TRIAL))
    sweeps.append(run := Sweep(workdir, "--study", "tiny.toml", "--root", "store"))
    run.mid_epoch()
    seconds = run.signal_and_time(signal.SIGTERM)
    print(f"\nSIGTERM response: {seconds:.2f} s")
    output = run.stdout + run.stderr
    assert run.process.returncode == 130, output[-3000:]
    assert seconds < 10 and "Traceback" not in output, (seconds, output[-3000:])
    client = embedded(workdir / "store")
    assert_nothing_running(client)
    parents = [r for r in all_runs(client) if r.data.tags.get(TAG_ROLE) == ROLE_STUDY]
    assert len(parents) == 1 and parents[0].info.status != "RUNNING"
    # The stopped trial's config waits to run again, first, with the same params.
    study = journal_study(workdir / "store", "tiny")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(workdir: Path, sweeps: list[Sweep]) -> None:
    # SIGKILL mid-epoch, then --resume: the exact target, the killed trial's run closed, no trial number twice.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, **SLOW_TRIAL))
    sweeps.append(run := Sweep(workdir, "--study", "tiny.toml", "--root", "store"))
    run.mid_epoch()
    run.kill()
    killed_run = journal_study(workdir / "store", "tiny").trials[0].user_attrs[ATTR_RUN_ID]

    ok(hvit("run", "--study", "tiny.toml", "--root", "store", "--resume", cwd=workdir, timeout=600))
    study = journal_study(workdir / "store", "tiny")
    assert_exact(study, 1)
    assert study.trials[0].state == TrialState.FAIL
    assert_retried_once(study, 0)
    client = embedded(workdir / "store")
    assert_nothing_running(client)
    assert client.get_run(killed_run).info.status == "FAILED"


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once_and_the_stores_stay_readable(workdir: Path, sweeps: list[Sweep]) -> None:
    # Two SIGINTs 0.1 s apart mid-epoch: the process is gone within seconds, and `show` still reads the study.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, **SLOW_TRIAL))
    sweeps.append(run := Sweep(workdir, "--study", "tiny.toml", "--root", "store"))
    run.mid_epoch()
    sent = time.monotonic()
    run.process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    run.process.send_signal(signal.SIGINT)
    run.process.wait(timeout=60)
    seconds = time.monotonic() - sent
    print(f"\ntwo Ctrl-C: exited {run.process.returncode} after {seconds:.2f} s")
    assert run.process.returncode in (130, 1), run.stdout[-2000:] + run.stderr[-2000:]
    assert seconds < 10, seconds
    shown = ok(hvit("show", "--study", "tiny.toml", "--root", "store", cwd=workdir))
    assert "tiny" in shown.stdout
    assert all_runs(embedded(workdir / "store"))  # the tracking store opens and lists its runs


# -- check before creating ------------------------------------------------------------------


@pytest.mark.slow
def test_missing_data_creates_nothing_and_the_synthetic_run_is_not_refused(workdir: Path) -> None:
    # Missing data: one error line, exit 2, no Optuna study, no MLflow parent run; the same study on synthetic data runs.
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, max_epochs=1, train_samples=128))
    store = workdir / "store"
    missing = cli(
        "run", "--study", "tiny.toml", "--root", "store", "--dataset", "cifar100", "--set", "data.download=false"
    )
    assert_one_line_error(missing, "CIFAR-100 not found")
    journal = store / "optuna.journal"
    if journal.exists():
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        assert optuna.get_all_study_names(storage) == []
    assert_one_line_error(cli("show", "--study", "tiny.toml", "--root", "store"), "no study named 'tiny'")
    if (store / "mlflow.db").exists():
        assert all_runs(embedded(store)) == []

    ok(cli("run", "--study", "tiny.toml", "--root", "store", "--dataset", "synthetic"))
    assert_exact(journal_study(store, "tiny"), 1)


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_together_on_a_new_store_both_work(workdir: Path, sweeps: list[Sweep]) -> None:
    # Two `run`s at once on a new embedded --root: both exit 0 without a traceback, the target is met exactly, params differ.
    # (Each sets the target to the trials finished when it connects plus --trials; started together, they share one.)
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=2, max_epochs=1, train_samples=512))
    for tag in ("a", "b"):
        sweeps.append(Sweep(workdir, "--study", "tiny.toml", "--root", "store", "--trials", "2", tag=tag))
    for sweep in sweeps:
        sweep.process.wait(timeout=900)
        assert sweep.process.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
        assert "Traceback" not in sweep.stderr
    study = journal_study(workdir / "store", "tiny")
    assert_exact(study, study.user_attrs[ATTR_TARGET])
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params), params
    assert_nothing_running(embedded(workdir / "store"))


# -- tracking outage ----------------------------------------------------------------------------


class Server:
    """`mlflow server` on SQLite, in its own session, restartable on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = shutil.which("mlflow", path=BIN) or "mlflow"
        log = self.folder / "server.log"
        command = [
            mlflow,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
            )
        _wait_healthy(self.url, self.process, log, timeout=180)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real MLflow server on a free port; the test may stop and start it, it is killed at the end."""
    server = Server(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


def sweep_on(server: Server, workdir: Path, sweeps: list[Sweep], env: dict[str, str], **study: int) -> Sweep:
    """A two-trial `run` tracked on ``server``; ``env`` sets MLflow's retries."""
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=2, **study))
    sweeps.append(run := Sweep(workdir, *sweep_flags(server), env=env))
    return run


def stop_server_mid_trial(server: Server, workdir: Path, sweeps: list[Sweep], env: dict[str, str]) -> Sweep:
    """A 2-trial sweep on ``server``, which stops after trial 0's first epoch; back once the sweep says so."""
    run = sweep_on(server, workdir, sweeps, env, max_epochs=3, train_samples=2048)
    run.wait_for("trial 0: epoch 1 done")
    server.stop()
    deadline = time.monotonic() + 120
    while "is not answering" not in run.stderr and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "is not answering" in run.stderr, run.stderr[-2000:]
    return run


def sweep_flags(server: Server) -> tuple[str, ...]:
    return ("--study", "tiny.toml", "--root", "store", "--tracking-uri", server.url)


@pytest.mark.slow
def test_an_outage_longer_than_the_retries_ends_in_one_line_and_resume_closes_everything(
    workdir: Path, server: Server, sweeps: list[Sweep]
) -> None:
    # The MLflow server dies mid-trial: one "stopped answering" line with the resume command, exit 1 (a fault, not
    # bad input); restarted, the printed command finishes the study, none RUNNING.
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    run = sweep_on(server, workdir, sweeps, env, max_epochs=2, train_samples=2048)
    run.wait_for("trial 0 started")
    server.stop()
    run.process.wait(timeout=WAIT)
    result = subprocess.CompletedProcess(run.process.args, run.process.returncode, run.stdout, run.stderr)
    assert_one_line_fault(result, "stopped answering")
    hint = result.stderr.split("then continue with: ", 1)[1].strip()
    assert hint.endswith("--resume") and "--tracking-uri" in hint, hint

    server.start()
    ok(shell(hint, workdir, env=env))
    assert_exact(journal_study(workdir / "store", "tiny"), 2)
    assert_nothing_running(MlflowClient(server.url))


@pytest.mark.slow
def test_a_short_outage_is_announced_and_the_sweep_goes_on(workdir: Path, server: Server, sweeps: list[Sweep]) -> None:
    # The MLflow server is down for a few seconds: one line says so, one says it is back; the sweep finishes.
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    run = stop_server_mid_trial(server, workdir, sweeps, env)
    server.start()
    run.process.wait(timeout=WAIT)
    assert run.process.returncode == 0, (run.stdout + run.stderr)[-3000:]
    notices = [line for line in run.stderr.splitlines() if line.startswith("tracking: ")]
    assert len(notices) == 2, notices
    assert f"the MLflow server at {server.url} is not answering" in notices[0]
    assert "answers again, after" in notices[1]
    assert_exact(journal_study(workdir / "store", "tiny"), 2)
    assert_nothing_running(MlflowClient(server.url))


@pytest.mark.slow
def test_one_sigterm_stops_a_sweep_that_waits_on_a_stopped_server(
    workdir: Path, server: Server, sweeps: list[Sweep]
) -> None:
    # The MLflow server stops mid-trial and MLflow retries for minutes: one SIGTERM (a scheduler's) ends the
    # sweep within seconds, with no traceback, instead of waiting the retries out.
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"}
    run = stop_server_mid_trial(server, workdir, sweeps, env)
    seconds = run.signal_and_time(signal.SIGTERM, timeout=60)
    print(f"\nSIGTERM while waiting on MLflow: exited after {seconds:.2f} s")
    assert seconds < 10 and "Traceback" not in run.stderr, (seconds, run.stderr[-3000:])
    assert run.process.returncode == 130, run.stdout[-2000:] + run.stderr[-2000:]

    server.start()  # the printed command closes what the stop could not reach, and finishes the study
    ok(shell(resume_hint(run.stdout), workdir, env=env))
    assert_exact(journal_study(workdir / "store", "tiny"), 2)
    assert_nothing_running(MlflowClient(server.url))


# -- bad values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (("run", "--study", "smoke", "--trials", "0"), "--trials"),
        (("run", "--study", "smoke", "--study-name", "a/b c"), "--study-name"),
        (("run", "--study", "smoke", "--root", "a-file"), "--root a-file is a file"),
        (("run", "--study", "smoke", "--tracking-uri", "ftp://x"), "unknown scheme 'ftp'"),
        (("eval", "--checkpoint", "a-folder"), "a-folder is a directory"),
        (("train", "--data-dir", "a-file", "--dataset", "synthetic"), "--data-dir a-file is a file"),
        (("train", "--data-dir", "a-file", "--no-download"), "--data-dir a-file is a file"),
    ],
    ids=["trials-0", "study-name", "root-file", "ftp-uri", "checkpoint-folder", "data-dir-synthetic", "data-dir-cifar"],
)
def test_bad_values_get_one_line_and_exit_2(workdir: Path, args: tuple[str, ...], phrase: str) -> None:
    # Each bad value is refused with one `error:` line naming it, exit 2, no traceback, before any work.
    (workdir / "a-file").write_text("not a folder")
    (workdir / "a-folder").mkdir()
    assert_one_line_error(cli(*args), phrase)
    assert not (workdir / "mlruns" / "optuna.journal").exists()
