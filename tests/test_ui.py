"""``hvit-sweep ui`` and the other UIs on a real store: ready before the links, gone after Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import free_port, hvit, ok, tiny_study

from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import PARAM_OBJECTIVES
from hvit_sweeps.metrics import tracked_metric
from hvit_sweeps.mlflow_view import StudyView, read_study_view, view_key, view_url, write_study_view
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.ui import serve_ui

# serve_ui in its own interpreter, as `hvit-sweep ui` runs it: one line when ready, then the links.
DRIVER = """
import sys
from pathlib import Path
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.ui import serve_ui, study_links

root = Path(sys.argv[1])

def ready(base):
    print("ready", base, flush=True)
    for name, trials, study_run in study_links(Tracker(None, root=root), base):
        print(name, trials, study_run, flush=True)

sys.exit(serve_ui(root, int(sys.argv[2]), on_ready=ready))
"""


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _processes_on_port(port: int) -> list[str]:
    # The server's command lines name their port; nothing of it may outlive the stop.
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in args and str(port).encode() in args:
            found.append(b" ".join(args).decode(errors="replace"))
    return found


Start = Callable[[Path], tuple[subprocess.Popen, int]]


@pytest.fixture
def ui_process(tmp_path: Path) -> Iterator[Start]:
    """Starts the driver on a store and a free port; whatever a test left running is stopped after it."""
    started: list[subprocess.Popen] = []

    def start(root: Path) -> tuple[subprocess.Popen, int]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(root), str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )  # fmt: skip
        started.append(process)
        return process, port

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


def _read_links(process: subprocess.Popen, *, studies: int = 1) -> tuple[str, dict[str, tuple[str, str]]]:
    """The base URL from the ready line, checking /health answers at once, then each study's links."""
    first = process.stdout.readline()
    assert first.startswith("ready "), first + process.stderr.read()
    base = first.split()[1]
    assert _get(f"{base}/health")[0] == 200  # answered before the line was printed: no retry here
    links = {}
    for _ in range(studies):
        name, trials, study_run = process.stdout.readline().split()
        links[name] = (trials, study_run)
    return base, links


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real embedded store with one study (parent run, one trial) and its saved view; no training."""
    root = tmp_path_factory.mktemp("store")
    tracker = Tracker(None, root=root)
    experiment_id = tracker.experiment_id("tiny")
    parent, _ = tracker.parent_run(experiment_id, "tiny", tags={})
    tracker.log_params(parent, {PARAM_OBJECTIVES: "val_acc1:maximize"})
    view = StudyView(name="tiny", objectives=["best/val_acc1"], ascending=False, param_keys=["hp.optim.lr"])
    write_study_view(tracker, experiment_id, view, key=view_key("tiny"))
    return root


def test_no_store_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(HvitError, match="no tracking store"):
        serve_ui(tmp_path, free_port(), on_ready=print)


def test_busy_port_is_one_line_error(small_store: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(HvitError, match=f"port {busy.getsockname()[1]} .* not free"):
            serve_ui(small_store, busy.getsockname()[1], on_ready=print)


@pytest.mark.slow
def test_ui_is_ready_before_its_links_and_stops_on_ctrl_c(small_store: Path, ui_process: Start) -> None:
    # The links come after /health answers; Ctrl-C stops every server process within seconds.
    process, port = ui_process(small_store)
    base, links = _read_links(process)
    experiment_id = Tracker(None, root=small_store).experiment_id("tiny")
    trials, study_run = links["tiny"]
    assert trials == view_url(base, experiment_id, view_key("tiny"))
    assert study_run.startswith(f"{base}/#/experiments/{experiment_id}/runs/")
    assert study_run.split("?")[0].endswith("/artifacts/plots/optimization_history.png")
    start = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - start < 10
    assert _processes_on_port(port) == []


# -- on a real smoke study ---------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-trial sweep on synthetic data, through the CLI."""
    workdir = tmp_path_factory.mktemp("smoke")
    (workdir / "tiny.toml").write_text(tiny_study("tiny-ui", trials=2, max_epochs=2))
    ok(hvit("run", "--study", "tiny.toml", "--root", "mlruns", cwd=workdir))
    return workdir / "mlruns"


def _ensure_view(root: Path) -> str:
    """The study's saved view: the sweep's own, or one written here from the trial runs' keys."""
    tracker = Tracker(None, root=root)
    experiment_id = tracker.experiment_id("tiny-ui")
    if read_study_view(tracker, experiment_id, view_key("tiny-ui")) is not None:
        return experiment_id  # the sweep wrote it
    parent = tracker.study_runs(experiment_id)[0]
    trial = tracker.trial_runs(experiment_id, "tiny-ui")[0]
    metric = tracked_metric(parent.params[PARAM_OBJECTIVES].split(":")[0])
    view = StudyView(
        name="tiny-ui", objectives=[metric], ascending=False, curve_metric="val_acc1",
        param_keys=[k for k in trial.params if k.endswith("optim.lr")],
        state_tag=next(k for k in ("hvit.state", "optuna.trial_state") if k in trial.tags),
    )  # fmt: skip
    write_study_view(tracker, experiment_id, view, key=view_key("tiny-ui"))
    return experiment_id


def _column_values(dom: str, column: str) -> list[str]:
    # AG Grid cells: <div ... col-id="metrics.`best/val_acc1`" ...><div ...><span ... class="ag-cell-value">0.11</span>
    cell = re.compile(r'role="gridcell"[^>]*col-id="' + re.escape(column) + r'"[^>]*>.*?class="ag-cell-value">([^<]*)<')
    return cell.findall(dom)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_trials_link_shows_the_objective_column_with_values(smoke_root: Path, ui_process: Start) -> None:
    # Headless Chromium opens the printed trials link: the sorted objective column holds every trial's value.
    experiment_id = _ensure_view(smoke_root)
    process, _port = ui_process(smoke_root)
    _base, links = _read_links(process)
    state = read_study_view(Tracker(None, root=smoke_root), experiment_id, view_key("tiny-ui"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=3200,1000",
                "--virtual-time-budget=20000",
                "--dump-dom",
                links["tiny-ui"][0],
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout  # fmt: skip (wide: the grid renders only the columns on screen, and every one is checked)
    # The view sorts by the rank tag (complete first, best first, ties by trial number): the objective
    # column, the first one, reads best first. This study maximizes.
    values = _column_values(dom, state["selectedColumns"][0])
    assert len(values) == 2, dom[-2000:]
    numbers = [float(v) for v in values]
    assert numbers == sorted(numbers, reverse=True)
    for column in state["selectedColumns"]:
        assert f'col-id="{column}"' in dom


def _optuna_dashboard() -> str:
    pytest.importorskip("optuna_dashboard")
    return shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or "optuna-dashboard"


@pytest.mark.slow
def test_optuna_dashboard_opens_the_journal(smoke_root: Path, tmp_path: Path) -> None:
    # The README's one line: optuna-dashboard on the embedded journal store shows the study.
    command, port = _optuna_dashboard(), free_port()
    server = subprocess.Popen(
        [command, str(smoke_root / "optuna.journal"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/studies")
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "optuna-dashboard did not start"
                time.sleep(0.3)
        studies = {s["study_name"]: s["study_id"] for s in json.loads(body)["study_summaries"]}
        assert status == 200 and "tiny-ui" in studies
        assert _get(f"http://127.0.0.1:{port}/dashboard/studies/{studies['tiny-ui']}")[0] == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
