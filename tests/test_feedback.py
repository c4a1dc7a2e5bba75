"""What a user sees in the first and last seconds of a command: a line at least every 2 s, and a working Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import clean_env, free_port, tiny_study

from hvit_sweeps.keys import PARAM_OBJECTIVES
from hvit_sweeps.saying import saying
from hvit_sweeps.sweep.background import lock_path, wait_for_background
from hvit_sweeps.tracking import Tracker

MAX_SILENCE_S = 2.0


def _timed_lines(process: subprocess.Popen) -> list[tuple[float, str]]:
    start = time.monotonic()
    assert process.stdout is not None
    return [(time.monotonic() - start, line.rstrip()) for line in process.stdout]


def _longest_gap(marks: list[float]) -> float:
    return max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=0.0)


def test_saying_repeats_until_the_block_ends(capsys: pytest.CaptureFixture[str]) -> None:
    with saying("drawing", every=0.1):
        time.sleep(0.35)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "drawing…" and len(lines) >= 3 and all(line.startswith("drawing… ") for line in lines[1:])


@pytest.mark.slow
def test_piped_run_prints_a_line_every_2_s_at_start_and_end(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(tiny_study("never-silent", trials=2, max_epochs=1))
    process = subprocess.Popen(
        [sys.executable, "-m", "hvit_sweeps", "run", "--study", "tiny.toml", "--root", "mlruns"],
        cwd=tmp_path, env={**clean_env(), "COLUMNS": "200"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = _timed_lines(process)
    wall = lines[-1][0] if lines else 0.0
    assert process.wait(timeout=60) == 0, "\n".join(line for _, line in lines)
    first_trial = next(t for t, line in lines if "trial 0 started" in line)
    last_trial = max(t for t, line in lines if re.search(r"2/2 trials", line))
    start = [0.0, *(t for t, _ in lines if t <= first_trial)]
    end = [t for t, _ in lines if t >= last_trial]
    shown = "\n".join(f"{t:6.2f} {line}" for t, line in lines)
    assert _longest_gap(start) <= MAX_SILENCE_S, shown
    assert _longest_gap(end) <= MAX_SILENCE_S and wall - last_trial <= 3.0, shown
    # What is left is drawn off the critical path; the next command that reads it waits for it.
    assert any("in the background" in line for _, line in lines), shown
    wait_for_background(tmp_path / "mlruns", "never-silent")
    assert lock_path(tmp_path / "mlruns", "never-silent").is_file()


@pytest.mark.slow
def test_ui_started_with_sigint_ignored_says_so_at_once_and_stops_on_kill_int(tmp_path: Path) -> None:
    # A shell script's `hvit-sweep ui &` starts it with SIGINT ignored; kill -INT must stop it anyway.
    tracker = Tracker(None, root=tmp_path / "mlruns")
    experiment_id = tracker.experiment_id("tiny")
    parent, _ = tracker.parent_run(experiment_id, "tiny", tags={})
    tracker.client.log_param(parent, PARAM_OBJECTIVES, "val_acc1:maximize")
    port = free_port()
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "hvit_sweeps", "ui", "--root", "mlruns", "--port", str(port)],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"starting MLflow UI on http://127.0.0.1:{port}")
        assert time.monotonic() - start <= 5.0  # a python start and an import of the CLI on a loaded CPU
        for line in process.stdout:
            if line.startswith("MLflow UI at"):
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
