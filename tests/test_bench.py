"""The benchmarks' own logic: the concurrency overlap rule, the report's tables, the flag-latency checks."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_throughput as throughput
import flag_latency
from bench_harness import Report, Row, markdown
from profiles import PROFILES, Profile


def timeline(start: float, *, epochs: int = 3, steps: int = 10, step_s: float = 0.1, eval_s: float = 0.05) -> dict:
    """A worker's raw output: ``steps`` steps per epoch, then an eval, from ``start``."""
    stamps, ends, now = [], [], start
    for _ in range(epochs):
        for _ in range(steps):
            now += step_s
            stamps.append(now)
        now += eval_s
        ends.append(now)
    return {"start": start, "steps": stamps, "epoch_ends": ends, "images_per_step": 32.0, "notes": [], "threads": 1}


def test_side_by_side_runs_are_summed() -> None:
    window = throughput.steady_window([timeline(0.0), timeline(0.0)])
    assert window.overlap == pytest.approx(1.0, abs=0.06)
    assert window.valid
    # Each process: 32 images per 0.1 s step, minus the eval pause inside the window.
    assert window.summed == pytest.approx(2 * 32 / 0.1, rel=0.1)


def test_one_after_the_other_is_invalid() -> None:
    first = timeline(0.0)
    second = timeline(first["epoch_ends"][-1])
    window = throughput.steady_window([first, second])
    assert window.overlap == 0.0
    assert not window.valid and window.summed is None


def test_half_overlap_is_invalid() -> None:
    # The second starts when the first is halfway through its steady epochs.
    first = timeline(0.0, epochs=5)
    window = throughput.steady_window([first, timeline(2.1, epochs=5)])
    assert 0.3 < window.overlap < throughput.MIN_OVERLAP
    assert window.summed is None
    note = throughput.describe_window([first, timeline(2.1, epochs=5)], window).note
    assert note.startswith("INVALID, not summed")


def test_warm_up_epoch_is_left_out() -> None:
    raw = timeline(0.0)
    start, end = throughput.steady_span(raw)
    assert start > raw["epoch_ends"][0] and end == raw["steps"][-1]


@pytest.fixture(scope="module")
def tiny_cpu() -> Profile:
    return replace(
        PROFILES["cpu"],
        batch_size=32,
        throughput_samples=320,
        eval_samples=64,
        throughput_epochs=3,
        throughput_size="tiny",
        repeats=1,
    )


@pytest.mark.slow
def test_cpu_barrier_run_and_serialised_control(tiny_cpu: Profile, tmp_path: Path) -> None:
    # Real worker processes on the CPU, K=2 with a core each: started on the barrier they overlap more
    # than the same two made to take turns, which are marked invalid, whatever their own speed.
    # (How much the free-running pair overlaps depends on the machine's load, so no bound is set on it.)
    together = throughput.measure_concurrent(tiny_cpu, "eager", 2, threads=1, logs=tmp_path)
    serial = throughput.measure_concurrent(tiny_cpu, "eager", 2, threads=1, logs=tmp_path, serial=True)
    assert together.detail["overlap"] > serial.detail["overlap"]
    assert (together.total is None) == (together.detail["overlap"] < throughput.MIN_OVERLAP)
    assert serial.detail["overlap"] < 0.2
    assert serial.total is None and serial.note.startswith("INVALID")


def test_markdown_keeps_the_section_order_then_adds_new_sections(tmp_path: Path) -> None:
    report = Report(meta={"device": "cpu", "date": "2026-12-05"}, path=tmp_path / "run.json")
    for section in ("flag-latency", "sweep-wall", "train"):
        report.add(Row(section, "wall s", "x", 1.0, "s", baseline=2.0))
    text = markdown([tmp_path / "run.json"], ("train", "sweep-wall"))
    heads = [line for line in text.splitlines() if line.startswith("#### ")]
    assert heads == ["#### train", "#### sweep-wall", "#### flag-latency"]
    assert "| wall s | x | 1 | 2 | 0.500 |" in text


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_mistake_must_exit_2_with_one_error_line(tmp_path: Path) -> None:
    right = flag_latency.Timed(("--x",))
    flag_latency.run_once(_python("import sys; sys.exit('error: bad --x')"), right, cwd=tmp_path, mistake=True)
    assert right.problems == {"exit 1"}  # sys.exit(str) exits 1: the check sees it
    wrong = flag_latency.Timed(("--y",))
    code = "import sys; print('error: a'); print('error: b'); print('Traceback'); sys.exit(2)"
    flag_latency.run_once(_python(code), wrong, cwd=tmp_path, mistake=True)
    assert wrong.problems == {"2 error lines", "a traceback"}
    fine = flag_latency.Timed(("--z",))
    flag_latency.run_once(
        _python("import sys; print('error: z', file=sys.stderr); sys.exit(2)"), fine, cwd=tmp_path, mistake=True
    )
    assert fine.problems == set()


def test_a_mistake_over_the_limit_is_named(tmp_path: Path) -> None:
    results = [
        flag_latency.Timed(flag_latency.HELP, [1.0, 1.0, 1.2]),
        flag_latency.Timed(("train", "--help"), [3.0]),
        flag_latency.Timed(("best", "--top", "0"), [1.4, 1.5, 1.6]),
        flag_latency.Timed(("train", "--epochs", "0"), [1.6, 1.7, 1.5]),
    ]
    report = Report(meta={"device": "cpu", "date": "2026-12-05"})
    over = flag_latency.add_rows(report, results)
    assert over == ["hvit-sweep train --epochs 0"]  # 1.6 > 1.5 x 1.0; best's 1.5 is within
    assert [row.ratio for row in report.rows] == pytest.approx([1.0, 3.0, 1.5, 1.6])
    assert "within 1.5x" in report.rows[2].note and "OVER 1.5x" in report.rows[3].note
