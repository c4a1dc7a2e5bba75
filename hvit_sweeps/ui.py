"""``hvit-sweep ui``: the MLflow UI on the embedded store under --root, ready when it says so.

``mlflow server`` by default starts 4 uvicorn workers plus a job runner with seven huey
consumers (for GenAI jobs, which a sweep never queues): on a 2-core machine, 15 processes,
1.8-2.4 GiB, 90-120 s until ``/health`` answers and ~20 s to stop. One worker and no job
runner serve the same pages with 2 processes, 0.5 GiB, ready in 12-20 s. The server runs
in its own session, so that Ctrl-C here reaches only us and we stop its whole process
group; its output goes to a log file under --root, so that the terminal shows the links.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import (
    PARAM_OBJECTIVES,
    PLOT_HISTORY,
    TAG_STUDY,
    TRACKING_DB,
    plot_artifact,
)
from hvit_sweeps.mlflow_view import study_trials_url
from hvit_sweeps.tracking import TrackedRun, Tracker, default_tracking_uri, run_url

__all__ = ["LOG_FILE", "serve_ui", "server_command", "stop_server", "study_links"]

LOG_FILE = "mlflow-ui.log"  # under --root
_HOST = "127.0.0.1"
_STOP_GRACE_S = 5.0  # uvicorn stops in ~0.2 s when idle; more while a request finishes


def server_command(root: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment for the store under ``root``."""
    # This interpreter's mlflow, whether or not its venv is on PATH.
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", default_tracking_uri(root),
        "--host", _HOST, "--port", str(port),
        "--workers", "1",  # one user, one browser: more workers only cost memory and start time
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey job runner
    return command, env


def serve_ui(
    root: Path,
    port: int,
    *,
    on_ready: Callable[[str], None],
    ready_timeout: float = 300.0,
) -> int:
    """Serve the MLflow UI until Ctrl-C; call ``on_ready(base_url)`` once it answers ``/health``.

    Returns 0 after Ctrl-C (or SIGTERM), else the server's own exit code.
    """
    _check_store(root)
    _check_port(port)
    base_url = f"http://{_HOST}:{port}"
    command, env = server_command(root, port)
    log = root / LOG_FILE
    with open(log, "w") as out:
        # A new session: the terminal's Ctrl-C reaches only us, and we stop the whole group.
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    restore = _sigterm_as_interrupt()
    try:
        _wait_healthy(base_url, process, log, timeout=ready_timeout)
        on_ready(base_url)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(process)
        restore()


def _check_store(root: Path) -> None:
    if not (root / TRACKING_DB).is_file():
        raise HvitError(f"no tracking store at {root / TRACKING_DB}: run a study first, or pass --root")


def _check_port(port: int) -> None:
    with socket.socket() as sock:
        # As uvicorn binds: a port left in TIME_WAIT by the last `ui` is free for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError as err:
            raise HvitError(f"port {port} on {_HOST} is not free ({err.strerror}): pass another --port") from None


def _wait_healthy(base_url: str, process: subprocess.Popen, log: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HvitError(f"the MLflow server exited with code {process.returncode}: {_last_line(log)} (see {log})")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise HvitError(f"the MLflow server did not answer {base_url}/health within {timeout:.0f} s (see {log})")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL once uvicorn is gone (or after a grace).

    mlflow's wrapper process idles ~3 s after its uvicorn child has stopped (about 0.2 s),
    tearing down its interpreter; it holds nothing, so it is not waited for.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _STOP_GRACE_S
    while process.poll() is None and _has_children(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the lingering wrapper, and any stray worker
    except ProcessLookupError:
        pass
    process.wait()


def _has_children(pid: int) -> bool:
    # Linux lists a process's children here; elsewhere assume they live until the grace ends.
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return True


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C, so that a killed ``ui`` still stops its server; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)

    def undo() -> None:
        signal.signal(signal.SIGTERM, previous)

    return undo


def study_links(tracker: Tracker, base_url: str) -> list[tuple[str, str, str]]:
    """(study name, trials link, study-run link) for each study in the store.

    The trials link opens the study's saved view when the store has one, else the plain
    trial table sorted by the first objective: MLflow sends a view link whose key it does
    not find to the experiment's unfiltered page.
    """
    links = []
    for parent in tracker.study_runs():
        plots = run_url(base_url, parent.experiment_id, parent.run_id, artifact=plot_artifact(PLOT_HISTORY))
        links.append((parent.tags[TAG_STUDY], _trials_link(tracker, base_url, parent), plots))
    return links


def _trials_link(tracker: Tracker, base_url: str, parent: TrackedRun) -> str:
    first_objective = parent.params.get(PARAM_OBJECTIVES, "").split(",")[0]
    return study_trials_url(tracker, base_url, parent.experiment_id, parent.tags[TAG_STUDY], first_objective)
