"""Section ``sweep-throughput``: img/s summed over K concurrent training processes.

The K workers start on a file barrier once each has loaded its data and record every step's
time; only the window in which all K are past their warm-up epoch and none has stopped counts,
and a run whose windows overlap less than :data:`MIN_OVERLAP` is not summed. Baseline: K = 1.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_harness import BOX, NOT_STARTED, Report, Row, Stopped, stop_child
from profiles import Profile
from workers import collect, spawn_worker, train_config

MIN_OVERLAP = 0.8  # a K-process row whose steady windows share less than this is not summed


def bench_throughput(profile: Profile, report: Report, *, logs: Path) -> None:
    """K processes started on a barrier; summed img/s over the window in which all K are steady.

    On CPU, K > 1 also runs with the cores split between the processes (as ``worker_plan`` does).
    """
    for mode in profile.throughput_modes:
        single: float | None = None
        for k in profile.concurrency:
            for split in (False, True) if not profile.gpu_plan and k > 1 else (False,):
                threads = max(1, (os.cpu_count() or 1) // k) if split else None
                setting = (
                    f"K={k} {profile.throughput_size} {profile.throughput_precision} loader=device {mode} (synthetic)"
                )
                setting += f", OMP_NUM_THREADS={threads} per process" if split else ""
                if BOX.over():
                    report.add(Row("sweep-throughput", "summed img/s", setting, None, "img/s", note=NOT_STARTED))
                    continue
                got = measure_concurrent(profile, mode, k, threads=threads, logs=logs)
                single = got.total if k == 1 else single
                note = got.note + ("; baseline: K=1, same window rule" if k > 1 else "")
                note += "; the split `run --workers` applies (worker_plan sets OMP_NUM_THREADS)" if split else ""
                report.add(
                    Row(
                        "sweep-throughput",
                        "summed img/s",
                        setting,
                        got.total,
                        "img/s",
                        baseline=single,
                        note=note,
                        detail=got.detail,
                    )
                )


@dataclass(frozen=True)
class Window:
    """The span in which every one of K processes is past its warm-up and none has stopped.

    ``overlap`` is the window's length over the mean of the processes' own steady spans: 1.0
    when all ran side by side throughout, 0.0 when one finished before another was steady.
    """

    start: float
    end: float
    overlap: float
    images: tuple[float, ...]  # each process's training images whose step ended inside the window

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def valid(self) -> bool:
        return self.overlap >= MIN_OVERLAP and self.seconds > 0

    @property
    def summed(self) -> float | None:
        """Summed img/s inside the window; None when the overlap is too small to mean concurrency."""
        return sum(self.images) / self.seconds if self.valid else None


def steady_span(raw: dict[str, Any]) -> tuple[float, float]:
    """(first step after epoch 1, last step) of one worker: epoch 1 is its warm-up (graph capture, autotuning)."""
    steps, warm_end = raw["steps"], raw["epoch_ends"][0] if len(raw["epoch_ends"]) > 1 else raw["start"]
    after = [t for t in steps if t > warm_end]
    return (after[0], steps[-1]) if after else (steps[-1], steps[-1])


def steady_window(raws: Sequence[dict[str, Any]]) -> Window:
    """The common steady window of K workers' step timelines, and what each trained inside it."""
    spans = [steady_span(raw) for raw in raws]
    start, end = max(s for s, _ in spans), min(e for _, e in spans)
    mean_span = statistics.mean(e - s for s, e in spans)
    overlap = max(0.0, end - start) / mean_span if mean_span > 0 else 0.0
    images = tuple(raw["images_per_step"] * sum(start < t <= end for t in raw["steps"]) for raw in raws)
    return Window(start, end, overlap, images)


@dataclass
class Concurrent:
    """K processes' summed steady img/s (None: failed, stopped or invalid) and what to say about it."""

    total: float | None
    note: str
    detail: dict[str, Any] = field(default_factory=dict)


def measure_concurrent(
    profile: Profile, mode: str, k: int, *, threads: int | None, logs: Path, serial: bool = False
) -> Concurrent:
    """The best valid one of ``profile.repeats`` runs of K processes; ``serial``: one after another (a control)."""
    runs: list[Concurrent] = []
    for repeat in range(profile.repeats):
        print(
            f"  sweep-throughput {mode} K={k} threads={threads or 'default'}{' serial' if serial else ''} "
            f"run {repeat + 1}/{profile.repeats} ...",
            flush=True,
        )
        try:
            raws = _concurrent_once(
                profile,
                mode,
                k,
                threads=threads,
                logs=logs,
                serial=serial,
                tag=f"{mode}-k{k}-t{threads}-{'s' if serial else 'c'}{repeat}",
            )
        except Stopped as err:
            print(f"    {err}", flush=True)
            runs.append(Concurrent(None, str(err)))
            break
        if raws is not None:
            runs.append(describe_window(raws, steady_window(raws)))
    valid = [run for run in runs if run.total is not None]
    # An invalid run is reported (its note says why) only when no repeat was valid.
    return (
        max(valid, key=lambda run: run.total or 0.0)
        if valid
        else (runs[-1] if runs else Concurrent(None, "failed (see logs)"))
    )


def describe_window(raws: Sequence[dict[str, Any]], window: Window) -> Concurrent:
    """A row's value, note and per-process detail from one run's window."""
    notes = sorted({note for raw in raws for note in raw["notes"]})  # e.g. a fallback to eager steps
    origin = min(raw["start"] for raw in raws)
    spans = [[round(t - origin, 3) for t in steady_span(raw)] for raw in raws]
    per_process = [round(n / window.seconds) if window.seconds else 0 for n in window.images]
    head = (
        f"{raws[0]['threads']} torch threads per process; steady windows overlap {window.overlap:.0%} "
        f"over {window.seconds:.2f} s"
    )
    if not window.valid:
        head = f"INVALID, not summed: overlap {window.overlap:.0%} < {MIN_OVERLAP:.0%}; " + head
    detail = {
        "overlap": round(window.overlap, 4),
        "window_s": round(window.seconds, 4),
        "valid": window.valid,
        "steady_spans_s": spans,
        "window_img_s_per_process": per_process,
    }
    return Concurrent(
        window.summed, "; ".join([head, f"per process in the window: {per_process} img/s", *notes]), detail
    )


def _concurrent_once(
    profile: Profile, mode: str, k: int, *, threads: int | None, logs: Path, tag: str, serial: bool = False
) -> list[dict[str, Any]] | None:
    epochs = profile.throughput_epochs or profile.epochs + 1
    config = train_config(
        profile,
        size=profile.throughput_size,
        precision=profile.throughput_precision,
        loader="device",
        mode=mode,
        samples=profile.throughput_samples,
        epochs=epochs,
    )
    barrier = Path(tempfile.mkdtemp(prefix=f"barrier-{tag}-", dir=logs))
    env = {"CUDA_VISIBLE_DEVICES": "0"} if profile.device == "cuda" else {}
    env.update({"OMP_NUM_THREADS": str(threads)} if threads else {})
    specs = [
        {"config": config, "barrier": str(barrier), "parties": k, **({"turn": i} if serial else {})} for i in range(k)
    ]
    logs_k = [logs / f"throughput-{tag}-{i}.log" for i in range(k)]
    processes = [spawn_worker(spec, log=log, env=env) for spec, log in zip(specs, logs_k, strict=False)]
    try:
        return [collect(p, log) for p, log in zip(processes, logs_k, strict=False)]
    except RuntimeError as err:
        print(f"    failed: {err}", flush=True)
        return None
    finally:
        for process in processes:
            if process.poll() is None:
                stop_child(process)
