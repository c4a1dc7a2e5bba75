"""Shared fixtures: real services, made fresh per test session and removed after.

PostgreSQL runs on 127.0.0.1:5432 with trust auth (started before the session and
in CI). Each test that needs a database gets its own, dropped afterwards, so runs
never see each other's studies. The MLflow server is a real ``mlflow server``
subprocess on a free port, backed by its own PostgreSQL database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import Result

if TYPE_CHECKING:
    from hvit_sweeps.tracking import Tracker

# One intra-op thread per torch process (this one and the CLI subprocesses), set before torch loads.
# The tiny models gain nothing from a second thread, and on a busy 2-core machine its spin-waiting
# made single tests 3 to 10 times slower (test_tiny_model_overfits_a_fixed_batch: 6 s against 15-53 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

PG_HOST = os.environ.get("HVIT_TEST_PG", "postgres@127.0.0.1:5432")
REPO = Path(__file__).resolve().parents[1]
# A test that uses one of these starts PostgreSQL databases or a real server, so it is `slow`.
SLOW_FIXTURES = frozenset({"make_database", "mlflow_server"})
# Settings that would point the CLI at a store other than the test's own.
STORE_ENV = ("MLFLOW_TRACKING_URI", "HVIT_STORAGE", "HVIT_ROOT")


# Config layers for in-process runs (build_config(SMOKE_DATA, TINY_MODEL, ...)). A two-stage 16/32 model:
TINY_MODEL: dict[str, Any] = {"model.embed_dims": [16, 32], "model.depths": [1, 1], "model.num_heads": [2, 2]}
# 300 synthetic images on the CPU in fp32 -> 200 train (3 batches of 64), 100 val, 100 test.
SMOKE_DATA: dict[str, Any] = {
    "data.dataset": "synthetic",
    "data.max_train_samples": 300,
    "data.max_eval_samples": 100,
    "data.num_workers": 0,
    "data.batch_size": 64,
    "runtime.device": "cpu",
    "runtime.amp": False,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses a real database or server, whichever module it is in."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _admin_connection():
    import psycopg

    return psycopg.connect(f"postgresql://{PG_HOST}/postgres", autocommit=True, connect_timeout=5)


def _postgres_up() -> bool:
    try:
        with _admin_connection():
            return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    if not _postgres_up():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_HOST}; CI must provide it")
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}")
    return True


@pytest.fixture(scope="session")
def make_database(postgres_available: bool) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases; every one is dropped at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"hvit_test_{uuid.uuid4().hex[:10]}"
        with _admin_connection() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql+psycopg2://{PG_HOST}/{name}"

    yield make
    with _admin_connection() as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not become healthy:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def mlflow_server(make_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on PostgreSQL with proxied artifacts; yields its URL."""
    workdir = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = workdir / "server.log"
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [
        mlflow,
        "server",
        "--backend-store-uri",
        make_database(),
        "--serve-artifacts",
        "--artifacts-destination",
        str(workdir / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty embedded MLflow database, created and migrated once per session."""
    from hvit_sweeps.tracking import Tracker

    tracker = Tracker(None, root=tmp_path_factory.mktemp("store-template"))
    tracker.check_reachable()  # creates and migrates the store
    return Path(tracker.uri.removeprefix("sqlite:///"))


@pytest.fixture
def make_tracker(migrated_store: Path) -> Callable[[Path], Tracker]:
    """A factory of embedded trackers at a --root, each on its own copy of the migrated store.

    Migrating a new store takes seconds on a loaded machine, copying one milliseconds; the
    copy is the same database, and each experiment made in it keeps its artifacts under root.
    """
    from hvit_sweeps.tracking import Tracker

    def make(root: Path) -> Tracker:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / migrated_store.name).exists():
            shutil.copyfile(migrated_store, root / migrated_store.name)
        return Tracker(None, root=root)

    return make


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory that still sees the repo's studies/ folder."""
    (tmp_path / "studies").symlink_to(REPO / "studies")
    monkeypatch.chdir(tmp_path)
    for name in STORE_ENV:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def clean_env() -> dict[str, str]:
    """This process's environment without the store settings (:data:`STORE_ENV`)."""
    return {k: v for k, v in os.environ.items() if k not in STORE_ENV}


def hvit(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real CLI as a subprocess; a test that calls it is `slow`."""
    return subprocess.run(
        [sys.executable, "-m", "hvit_sweeps", *args],
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process through Typer's runner; same result shape as :func:`hvit`."""
    from typer.testing import CliRunner

    from hvit_sweeps.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def tiny_study(
    name: str,
    *,
    trials: int = 2,
    max_epochs: int = 3,
    train_samples: int = 256,
    pruner: str = 'type = "none"',
    extra: str = "",
) -> str:
    """A study file for tests: a two-stage 16/32 model on a few hundred synthetic images, lr searched."""
    return f"""
name = "{name}"
trials = {trials}
max_epochs = {max_epochs}
{extra}
[objective]
metric = "val_acc1"
[pruner]
{pruner}
[fixed]
"data.dataset" = "synthetic"
"data.max_train_samples" = {train_samples}
"data.max_eval_samples" = 64
"data.batch_size" = 64
"data.num_workers" = 0
"runtime.amp" = false
"model.embed_dims" = [16, 32]
"model.depths" = [1, 1]
"model.num_heads" = [2, 2]
[space."optim.lr"]
type = "float"
low = 1e-3
high = 1e-2
log = true
"""


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert a CLI call succeeded, showing its output when it did not."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_one_line_error(result: Result | subprocess.CompletedProcess, phrase: str) -> None:
    """Exit code 2, one ``error:`` line on stderr that contains ``phrase``, and no traceback.

    Takes a Typer runner's result or a finished process (:func:`hvit`, :func:`cli`).
    """
    if isinstance(result, subprocess.CompletedProcess):
        code = result.returncode
    else:  # a runner's result: the CLI exited on purpose rather than raising
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        code = result.exit_code
    output = result.stdout + result.stderr
    assert code == 2, (code, output[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in output


def run_tiny_sweep(cwd: Path, name: str, *, trials: int = 2, max_epochs: int = 1) -> Path:
    """A real :func:`tiny_study` sweep through the CLI on the embedded store under ``cwd``; returns its --root."""
    (cwd / f"{name}.toml").write_text(tiny_study(name, trials=trials, max_epochs=max_epochs))
    ok(hvit("run", "--study", f"{name}.toml", "--root", "mlruns", cwd=cwd))
    return cwd / "mlruns"
