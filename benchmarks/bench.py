"""Speed benchmarks of hvit-sweep, each figure against a baseline measured in the same run.

Sections (``--only`` picks some; all run by default):

* ``train``: steady training img/s and warm-up seconds per model size x precision
  x loader x step mode, through the product's :func:`hvit_sweeps.train.train`.
* ``sweep-throughput``: img/s summed over K concurrent training processes.
* ``sweep-wall``: wall time of a fixed N-trial ``hvit-sweep run`` against a naive one.
* ``tracking-overhead``: trial time with MLflow tracking against ``train()`` alone.

All data is synthetic (random CIFAR-100-shaped images); speed does not depend on
pixel values. Every training measurement runs in its own process so that no
compile cache, allocator state or thread pool carries over between settings.

Usage::

    python benchmarks/bench.py --profile cpu             # a few minutes on a laptop CPU
    python benchmarks/bench.py --profile gpu --only train
    python benchmarks/bench.py --profile gpu-quick --only train --time-box 150   # one step of gpu_all.py

``--time-box`` makes a run stop starting measurements, and stop one in progress, when its
seconds are spent; rows are saved to ``--out`` as they are measured, so a run killed from
outside keeps what it had.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import itertools
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "out"
SECTIONS = ("train", "sweep-throughput", "sweep-wall", "tracking-overhead", "sweep-headline", "trial-timeline")
# Sections a bare run (no --only) skips: the headline alone is a 50-trial study.
OPT_IN = ("sweep-headline", "trial-timeline")

SIZES: dict[str, dict[str, Any]] = {
    "small": {"model.embed_dims": [64, 128, 256], "model.depths": [2, 2, 2], "model.num_heads": [2, 4, 8]},
    "base": {"model.embed_dims": [96, 192, 384], "model.depths": [2, 4, 2], "model.num_heads": [3, 6, 12]},
}
# Not a train-section size (SIZES is its axis): the tests' and dry runs' concurrency and timeline
# workers, small enough to train in seconds on a loaded 2-core machine.
TINY = {"model.embed_dims": [16, 32], "model.depths": [1, 1], "model.num_heads": [1, 2]}
PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {"runtime.amp": False},
    "bf16": {"runtime.amp": True, "runtime.autocast_dtype": "bf16"},
    "fp16": {"runtime.amp": True, "runtime.autocast_dtype": "fp16"},
}
MODES: dict[str, dict[str, Any]] = {
    "eager": {"runtime.compile": "off", "runtime.cuda_graphs": False},
    "compile=default": {"runtime.compile": "default", "runtime.cuda_graphs": False},
    "compile=reduce-overhead": {"runtime.compile": "reduce-overhead", "runtime.cuda_graphs": False},
    "cuda_graphs": {"runtime.compile": "off", "runtime.cuda_graphs": True},
}
LOADERS = ("cpu", "device")
NOISE_FLOOR_S = 0.5  # warm-ups below this are indistinguishable from epoch-to-epoch noise


# -- profiles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    size: str
    precision: str
    loader: str
    mode: str

    @property
    def label(self) -> str:
        return f"{self.size} {self.precision} loader={self.loader} {self.mode}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """``size/precision/loader/mode``, e.g. ``small/bf16/device/cuda_graphs``."""
        parts = text.strip().split("/")
        choices = (SIZES, PRECISIONS, LOADERS, MODES)
        if len(parts) != 4 or any(part not in options for part, options in zip(parts, choices, strict=False)):
            raise ValueError(f"{text!r}: use size/precision/loader/mode from {'/'.join('|'.join(c) for c in choices)}")
        return cls(*parts)


def parse_cases(text: str) -> tuple[Case, ...]:
    return tuple(Case.parse(item) for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run; ``cpu`` fits a laptop, ``gpu`` is the issue's setting.

    ``train_samples`` is the train pool before the 10% validation split, per
    (size, precision): on CPU, autocast is far slower than fp32, so it gets fewer images.
    """

    name: str
    device: str
    batch_size: int
    epochs: int
    num_workers: int
    train_samples: dict[tuple[str, str], int]
    eval_samples: int | None  # None: the full split (synthetic: 10k test, val 10% of 50k train)
    concurrency: tuple[int, ...]
    throughput_modes: tuple[str, ...]
    throughput_precision: str
    throughput_samples: int
    sweep_trials: int
    sweep_samples: int | None  # None: the whole train pool (synthetic: 50k, CIFAR-100's size)
    trials_per_gpu: int = 4
    repeats: int = 1
    plan: str = ""  # "cpu" or "gpu": which cases, sweep variants and studies; "" follows the device
    cases: tuple[Case, ...] = ()  # train: only these, in this order (empty: every combination, skip rules apply)
    wall_variants: tuple[str, ...] = ("naive", "graphs", "per-gpu")  # gpu plan: see sweep_variants
    sweep_max_epochs: int = 20  # gpu plan sweep-wall; depth-width.toml's own
    tracking_epochs: int = 10  # gpu plan tracking-overhead
    throughput_epochs: int = 0  # sweep-throughput epochs per process; 0: epochs + 1
    throughput_size: str = "small"  # a SIZES name, or "tiny" (TINY)
    timeline_size: str = "small"  # trial-timeline's fixed architecture (SIZES name or "tiny")
    timeline_trials: int = 3
    timeline_epochs: int = 12  # ~0.5 s GPU epochs: trials of realistic length (issue 11: ~7 s), not 1 s ones
    headline_naive_s: float = 90.0  # sweep-headline: seconds kept for the naive baseline's rate

    @property
    def gpu_plan(self) -> bool:
        return (self.plan or ("cpu" if self.device == "cpu" else "gpu")) == "gpu"


def _samples(fp32: dict[str, int], bf16: dict[str, int], fp16: dict[str, int]) -> dict[tuple[str, str], int]:
    table = {"fp32": fp32, "bf16": bf16, "fp16": fp16}
    return {(size, precision): counts[size] for precision, counts in table.items() for size in SIZES}


PROFILES = {
    "cpu": Profile(
        name="cpu",
        device="cpu",
        batch_size=64,
        epochs=3,
        num_workers=2,
        train_samples=_samples({"small": 1024, "base": 512}, {"small": 512, "base": 256}, {"small": 384, "base": 256}),
        eval_samples=256,
        concurrency=(1, 2),
        throughput_modes=("eager",),
        throughput_precision="fp32",
        throughput_samples=1024,
        sweep_trials=6,
        sweep_samples=512,
    ),
    "gpu": Profile(
        name="gpu",
        device="cuda",
        batch_size=512,
        epochs=4,
        num_workers=8,
        train_samples=_samples(*({"small": 25_600, "base": 25_600},) * 3),
        eval_samples=5_000,
        concurrency=(1, 2, 4, 8),
        throughput_modes=("eager", "cuda_graphs"),
        throughput_precision="bf16",
        throughput_samples=25_600,
        sweep_trials=16,
        sweep_samples=20_000,
    ),
}
# What fits one device command of about 8 minutes (benchmarks/gpu_all.py), most needed first:
# the targets are about the small model; base gets eager vs graphs, without its own
# fp32 loader=cpu baseline (so no ratio column), only if the time box leaves room.
PROFILES["gpu-quick"] = replace(
    PROFILES["gpu"],
    name="gpu-quick",
    cases=parse_cases(
        "small/fp32/cpu/eager,small/bf16/device/eager,small/bf16/device/cuda_graphs,"
        "small/bf16/device/compile=reduce-overhead,base/bf16/device/eager,base/bf16/device/cuda_graphs"
    ),
    throughput_modes=("cuda_graphs", "eager"),
    throughput_epochs=3,
    sweep_trials=8,
    wall_variants=("naive", "per-gpu"),
)
# gpu-quick's plan on the CPU with tiny sizes: proves gpu_all.py's plumbing without a GPU.
PROFILES["gpu-dry"] = replace(
    PROFILES["gpu-quick"],
    name="gpu-dry",
    device="cpu",
    plan="gpu",
    batch_size=32,
    epochs=2,
    num_workers=1,
    train_samples=_samples(*({"small": 256, "base": 128},) * 3),
    eval_samples=64,
    cases=parse_cases(
        "small/fp32/cpu/eager,small/bf16/device/eager,small/bf16/device/cuda_graphs,base/bf16/device/eager"
    ),
    concurrency=(1, 2),
    throughput_samples=256,
    throughput_epochs=2,
    sweep_trials=3,
    sweep_samples=256,
    trials_per_gpu=2,
    sweep_max_epochs=3,
    tracking_epochs=2,
    throughput_size="tiny",
    timeline_size="tiny",
    timeline_trials=2,
    timeline_epochs=3,
    headline_naive_s=40.0,
)
# The CPU parts of issue 11's bench on a 2-core machine: concurrency K=1, 2 and the timeline, tiny model.
PROFILES["cpu-tiny"] = replace(
    PROFILES["cpu"],
    name="cpu-tiny",
    throughput_size="tiny",
    throughput_samples=4096,
    throughput_epochs=4,
    timeline_size="tiny",
    timeline_trials=3,
    timeline_epochs=3,
    sweep_samples=512,
    eval_samples=128,
)
# The headline of issue 11: the 50-trial depth-width study on synthetic data of CIFAR-100 size
# (50k train of which 10% val, 10k test) on the new defaults, and the naive baseline's rate.
PROFILES["gpu-headline"] = replace(
    PROFILES["gpu-quick"],
    name="gpu-headline",
    sweep_trials=50,
    sweep_samples=None,
    eval_samples=None,
    concurrency=(1, 4),
    throughput_modes=("cuda_graphs",),
    throughput_epochs=6,
)
# gpu-headline's plan on the CPU: the dry run of benchmarks/gpu/run_all.sh.
PROFILES["gpu-headline-dry"] = replace(
    PROFILES["gpu-dry"],
    name="gpu-headline-dry",
    sweep_trials=4,
    sweep_samples=256,
    eval_samples=64,
    concurrency=(1, 2),
    throughput_modes=("eager",),
    throughput_samples=256,
    throughput_epochs=3,
    sweep_max_epochs=2,
    throughput_precision="fp32",
)


# -- results ----------------------------------------------------------------------------


@dataclass
class Row:
    """One figure; ``ratio`` is always value / baseline, measured in the same run."""

    section: str
    name: str
    setting: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    device: str = ""
    date: str = ""
    note: str = ""
    load: float | None = None  # 1-minute load average when the row was recorded: others share the machine
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # saved after every row, so a run killed from outside keeps its rows

    def add(self, row: Row) -> None:
        row.device = row.device or self.meta["device"]
        row.date = self.meta["date"]
        row.load = round(os.getloadavg()[0], 2)
        self.rows.append(row)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(
            json.dumps({"meta": self.meta, "rows": [asdict(r) for r in self.rows]}, indent=2, default=str)
        )
        partial.replace(self.path)


# -- time box and child processes -------------------------------------------------------


@dataclass
class TimeBox:
    """``--time-box``: after it, no measurement starts and one in progress is stopped."""

    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.monotonic() - self.started)

    def over(self, margin: float = 0.0) -> bool:
        left = self.left()
        return left is not None and left <= margin


BOX = TimeBox()
NOT_STARTED = "time box: not started (--time-box spent)"
STOPPED = "time box: stopped in progress (--time-box spent)"
_CHILDREN: set[subprocess.Popen] = set()


class Stopped(Exception):
    """The time box ran out inside a measurement; its child processes are stopped."""


class Terminated(BaseException):
    """SIGTERM (gpu_all.py's time box for this step, or the user): save the rows and stop.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    (Optuna's ``catch``, a trial's failure handler) takes it for a failed trial.
    """


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


def start_child(command: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """A child in its own process group, so that stopping it also stops whatever it started.

    Not a new session: the device tool ends every process of the command's session when the
    command returns, but lets processes in a session of their own run on.
    """
    process = subprocess.Popen(command, cwd=REPO, process_group=0, **kwargs)
    _CHILDREN.add(process)
    return process


def stop_child(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    _CHILDREN.discard(process)


def wait_child(process: subprocess.Popen, *, communicate: bool = False) -> str | None:
    """Wait within the time box (its stdout, if ``communicate``); past it, stop the child and raise :class:`Stopped`."""
    left = BOX.left()
    timeout = None if left is None else max(0.0, left)
    try:
        if communicate:
            out, _ = process.communicate(timeout=timeout)
        else:
            process.wait(timeout)
            out = None
    except subprocess.TimeoutExpired:
        stop_child(process)
        raise Stopped(STOPPED) from None
    _CHILDREN.discard(process)
    return out


def stop_all_children() -> None:
    for process in list(_CHILDREN):
        stop_child(process, grace=3.0)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_model()


# -- one training measurement, in its own process --------------------------------------


def run_worker(spec: dict[str, Any]) -> None:
    """``bench.py --worker JSON``: train once through the product and print what the epochs and steps took.

    With ``barrier`` set, it waits for its ``parties`` peers after loading its data, so that
    K processes start training together; ``serial`` waits for the previous one to finish
    instead (a deliberately serialised run, which the overlap accounting must reject).
    """
    import torch

    from hvit_sweeps.config import build_config
    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.train import train

    config = build_config(spec["config"], source="bench")
    splits = load_dataset(config.data, seed=config.seed)
    if spec.get("barrier"):
        wait_at_barrier(Path(spec["barrier"]), spec["parties"], turn=spec.get("turn"))
    clock = step_clock()
    start = time.time()
    try:
        result = train(config, callbacks=[clock], splits=splits)
    finally:
        if spec.get("barrier"):
            (Path(spec["barrier"]) / f"done-{spec.get('turn', os.getpid())}").touch()
    print(
        json.dumps(
            {
                "history": result.history,
                "notes": result.notes,
                "sizes": result.dataset_sizes,
                "dataset": result.dataset.label,
                "device": device_name(config.runtime.device),
                "threads": torch.get_num_threads(),
                "start": start,
                "epoch_ends": clock.epoch_ends,
                "steps": clock.steps,
                "images_per_step": result.dataset_sizes["train"]
                / max(1, len(clock.steps) // max(1, len(clock.epoch_ends))),
            }
        )
    )


class StepClock:
    """Wall-clock time of every optimizer step, epoch end and announced phase (Callback hooks).

    A mixin, made a ``hvit_sweeps.train.Callback`` by :func:`step_clock` (which imports torch),
    so that importing bench.py (``--markdown``, the overlap tests) does not, and hooks added to
    Callback later keep their no-op defaults. On CUDA a step's time is when the host queued
    it; the queue is bounded and every epoch ends in a host sync, so the timestamps trail
    the GPU by at most a few steps.
    """

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.epoch_ends: list[float] = []
        self.phases: dict[str, float] = {}

    def on_phase(self, phase: str) -> None:
        self.phases.setdefault(phase, time.time())

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        self.steps.append(time.time())

    def on_epoch_end(self, report: Any) -> str | None:
        self.epoch_ends.append(time.time())
        return None


def step_clock() -> StepClock:
    """A :class:`StepClock` that is also a ``hvit_sweeps.train.Callback``."""
    from hvit_sweeps.callbacks import Callback

    return type("StepCallback", (StepClock, Callback), {})()


def wait_at_barrier(barrier: Path, parties: int, *, turn: int | None = None, timeout: float = 600.0) -> None:
    """A file barrier: go when all ``parties`` have written ``ready-*``; with ``turn``, when turn-1 wrote ``done-*``.

    Files rather than a multiprocessing.Barrier: the workers are separate ``bench.py --worker``
    processes (a fresh interpreter each, as a sweep trial's worker is), not forks of one.
    """
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if turn is None and len(list(barrier.glob("ready-*"))) >= parties:
            return
        if turn is not None and (turn == 0 or (barrier / f"done-{turn - 1}").exists()):
            return
        time.sleep(0.02)


@dataclass
class Measured:
    """Steady img/s (epochs 2+) and warm-up: epoch 1's extra seconds over a steady epoch."""

    images_per_second: float
    warmup_seconds: float
    notes: list[str]
    raw: dict[str, Any]

    @classmethod
    def from_worker(cls, raw: dict[str, Any]) -> Measured:
        history = raw["history"]
        steady = history[1:] or history
        # The same images every epoch, so the harmonic mean is total images / total seconds.
        ips = statistics.harmonic_mean([h["images_per_second"] for h in steady])
        warmup = history[0]["epoch_seconds"] - statistics.median(h["epoch_seconds"] for h in steady)
        # Not clipped at 0: a negative warm-up means the machine was noisier than the effect.
        return cls(ips, warmup if len(history) > 1 else float("nan"), raw["notes"], raw)


def spawn_worker(spec: dict[str, Any], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    with log.open("w") as err:
        return start_child(command, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **(env or {})})


def collect(process: subprocess.Popen, log: Path) -> dict[str, Any]:
    """The worker's JSON line; :class:`Stopped` if the time box ran out first."""
    out = wait_child(process, communicate=True) or ""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        tail = log.read_text()[-600:].strip().splitlines()
        raise RuntimeError(f"worker exited {process.returncode}: {tail[-1] if tail else 'no output'} (see {log})")
    return json.loads(lines[-1])


def train_config(
    profile: Profile, *, size: str, precision: str, loader: str, mode: str, samples: int, epochs: int
) -> dict[str, Any]:
    return {
        "data.dataset": "synthetic",
        "data.max_train_samples": samples,
        **_caps(profile.eval_samples, "data.max_eval_samples"),
        "data.batch_size": profile.batch_size,
        "data.loader": loader,
        "data.num_workers": profile.num_workers if loader == "cpu" else 0,
        "runtime.device": profile.device,
        "epochs": epochs,
        **(TINY if size == "tiny" else SIZES[size]),
        **PRECISIONS[precision],
        **MODES[mode],
    }


# -- section: train ---------------------------------------------------------------------


def all_cases() -> Iterator[Case]:
    for size in SIZES:
        for precision in PRECISIONS:
            for loader in LOADERS:
                for mode in MODES:
                    yield Case(size, precision, loader, mode)


def train_cases(profile: Profile, *, full: bool) -> Iterator[tuple[Case, str | None]]:
    """Every combination, with the reason it is skipped (None: it runs); chosen cases first, in their order."""
    if full or not profile.cases:
        for case in all_cases():
            yield case, None if full else _skip_reason(profile, case)
        return
    yield from ((case, None) for case in profile.cases)
    reason = f"not in this run's cases (profile {profile.name} or --cases); --profile gpu --only train runs them"
    yield from ((case, reason) for case in all_cases() if case not in profile.cases)


def _skip_reason(profile: Profile, case: Case) -> str | None:
    compiled = case.mode.startswith("compile")
    if not profile.gpu_plan:
        if case.mode == "cuda_graphs":
            return "n/a on CPU" if case != Case("small", "fp32", "device", "cuda_graphs") else None
        if case.mode == "compile=reduce-overhead":
            return "n/a on CPU: reduce-overhead is default plus CUDA graphs"
        if compiled and (case.size, case.precision, case.loader) != ("small", "fp32", "device"):
            return "compile on CPU: small fp32 only (warm-up cost)"
        if case.precision != "fp32" and case.loader == "cpu":
            return "cpu profile: loader axis at fp32 only"
        return None
    if case.mode == "cuda_graphs" and case.precision == "fp16":
        return "fp16's gradient scaler cannot be captured (product runs eager)"
    if compiled and (case.loader == "cpu" or case.precision != "bf16"):
        return "compile measured at bf16 with the device loader only (use --full)"
    return None


def bench_train(profile: Profile, report: Report, *, logs: Path, full: bool) -> None:
    results: dict[Case, Measured | None] = {}
    for case, skip in train_cases(profile, full=full):
        if skip is None and BOX.over():
            skip = NOT_STARTED
        if skip is not None:
            report.add(Row("train", "skipped", case.label, None, "img/s", note=skip))
            continue
        results[case], failure = measure_case(profile, case, logs=logs)
        add_train_rows(report, case, results, failure=failure)


def measure_case(profile: Profile, case: Case, *, logs: Path) -> tuple[Measured | None, str]:
    """The best of ``profile.repeats`` fresh processes, or None and why."""
    samples = profile.train_samples[(case.size, case.precision)]
    epochs = 1 if (profile.device == "cpu" and case.mode == "cuda_graphs") else profile.epochs
    config = train_config(
        profile,
        size=case.size,
        precision=case.precision,
        loader=case.loader,
        mode=case.mode,
        samples=samples,
        epochs=epochs,
    )
    repeats = 1 if epochs == 1 else profile.repeats
    runs, failure = [], "failed (see logs)"
    for repeat in range(repeats):
        log = logs / f"train-{re.sub(r'[^a-z0-9]+', '-', case.label)}-{repeat}.log"
        print(f"  train {case.label} ({samples} images, {epochs} epochs) run {repeat + 1}/{repeats} ...", flush=True)
        # A fresh inductor cache per process: each trial of a sweep compiles a new architecture.
        env = {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-", dir=logs)}
        try:
            runs.append(Measured.from_worker(collect(spawn_worker({"config": config}, log=log, env=env), log)))
        except RuntimeError as err:
            print(f"    failed: {err}", flush=True)
        except Stopped as err:
            print(f"    {err}", flush=True)
            failure = str(err)
            break
    return (max(runs, key=lambda m: m.images_per_second) if runs else None), failure


def add_train_rows(
    report: Report, case: Case, results: dict[Case, Measured | None], *, failure: str = "failed (see logs)"
) -> None:
    measured = results[case]
    if measured is None:
        report.add(Row("train", "img/s", case.label, None, "img/s", note=failure))
        return
    note = "; ".join(measured.notes)
    if (
        measured.notes
        and report.meta.get("runtime_device", report.meta["profile"]) == "cpu"
        and case.mode == "cuda_graphs"
    ):
        report.add(Row("train", "img/s", case.label, None, "img/s", note=f"n/a on CPU: {note}"))
        return
    samples = measured.raw["sizes"]["train"]
    setting = f"{case.label} (synthetic, {samples} train imgs)"
    naive = results.get(Case(case.size, "fp32", "cpu", "eager"))
    eager = results.get(replace(case, mode="eager")) if case.mode != "eager" else None
    detail = {k: [round(h[k], 4) for h in measured.raw["history"]] for k in ("epoch_seconds", "images_per_second")}
    report.add(
        Row(
            "train",
            "img/s",
            setting,
            measured.images_per_second,
            "img/s",
            baseline=naive.images_per_second if naive else None,
            note=note or "baseline: same size, fp32, loader=cpu, eager",
            detail=detail,
        )
    )
    report.add(warmup_row(setting, measured, eager))


def warmup_row(setting: str, measured: Measured, eager: Measured | None) -> Row:
    """Warm-up against eager's; a ratio over a baseline lost in the noise would mean nothing."""
    note = "epoch 1 minus a steady epoch"
    if eager is None:
        return Row("train", "warm-up s", setting, measured.warmup_seconds, "s", note=note)
    row = Row(
        "train",
        "warm-up s",
        setting,
        measured.warmup_seconds,
        "s",
        baseline=eager.warmup_seconds,
        note=f"{note}; baseline: same setting, eager",
    )
    if abs(eager.warmup_seconds) < NOISE_FLOOR_S:
        row.ratio = None
        row.note += f" (below {NOISE_FLOOR_S}s, so no ratio; extra warm-up {measured.warmup_seconds - eager.warmup_seconds:.1f}s)"
    return row


# -- section: sweep-throughput ----------------------------------------------------------


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


# -- study files ------------------------------------------------------------------------


def to_toml(study: dict[str, Any]) -> str:
    """Enough TOML for a study file: scalars, inline tables, and [space."path"] tables."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in study.items() if not isinstance(v, dict)]
    for key, table in study.items():
        if not isinstance(table, dict):
            continue
        if key == "space":
            for path, param in table.items():
                lines += ["", f"[space.{_toml_key(path)}]", *(f"{k} = {_toml_value(v)}" for k, v in param.items())]
        else:
            lines += ["", f"[{key}]", *(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def load_toml(name: str) -> dict[str, Any]:
    return tomllib.loads((REPO / "studies" / f"{name}.toml").read_text())


def cpu_sweep_study(profile: Profile, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """smoke.toml made deterministic: a 6-point grid without pruning, so every variant runs the same trials."""
    study = copy.deepcopy(load_toml("smoke"))
    study.update(name=name, description="bench: smoke grid, same trials in every variant", trials=6)  # the grid's size
    study["sampler"] = {"type": "grid", "seed": 0}
    study["pruner"] = {"type": "none"}
    study["space"] = {"optim.lr": {"type": "categorical", "choices": [1e-3, 3e-3]}}
    study["stages"] = {
        "num_stages": 2,
        "base_width": {"type": "categorical", "choices": [16, 32, 48]},
        "width_mult": 2.0,
        "head_dim": 16,
        "depth": 1,
    }
    study["fixed"].update({"data.max_train_samples": profile.sweep_samples, **extra})
    return study


def gpu_sweep_study(profile: Profile, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """depth-width.toml on synthetic data (TPE + Hyperband; at most ``sweep_max_epochs``, 20 as in the file)."""
    study = copy.deepcopy(load_toml("depth-width"))
    study.update(
        name=name,
        description="bench: depth-width on synthetic data",
        trials=profile.sweep_trials,
        max_epochs=profile.sweep_max_epochs,
    )
    study["fixed"].update(
        {
            "data.dataset": "synthetic",
            **_caps(profile.sweep_samples, "data.max_train_samples"),
            **_caps(profile.eval_samples, "data.max_eval_samples"),
            "data.batch_size": profile.batch_size,
            **extra,
        }
    )
    return study


def _caps(value: int | None, key: str) -> dict[str, int]:
    """``{key: value}``, or nothing for None (the full split; TOML has no null)."""
    return {} if value is None else {key: value}


NAIVE = {"data.loader": "cpu", "runtime.compile": "off", "runtime.cuda_graphs": False}


@dataclass(frozen=True)
class Variant:
    """One way to run the same study: its fixed settings, `run` flags and extra environment."""

    label: str
    fixed: dict[str, Any]
    flags: list[str]
    env: dict[str, str] = field(default_factory=dict)


def sweep_variants(profile: Profile) -> list[Variant]:
    """The first is the naive baseline; on the gpu plan, those of ``profile.wall_variants``."""
    if not profile.gpu_plan:
        cpu, two = ["--device", "cpu"], ["--device", "cpu", "--workers", "2"]
        # `run` gives each worker cores / workers threads unless OMP_NUM_THREADS is set, so
        # setting it to the core count shows the unsplit case for comparison.
        unsplit = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
        return [
            Variant("1 worker, loader=cpu, eager (naive)", NAIVE, cpu),
            Variant("2 workers, loader=cpu, eager (`run` splits the cores)", NAIVE, two),
            Variant(f"2 workers, OMP_NUM_THREADS={unsplit['OMP_NUM_THREADS']} each (no split)", NAIVE, two, unsplit),
        ]
    fast = {"data.loader": "device", "runtime.compile": "off", "runtime.cuda_graphs": True}
    k = profile.trials_per_gpu
    variants = {
        "naive": Variant(
            "1 trial at a time, loader=cpu, eager (naive)", {**NAIVE, "data.num_workers": profile.num_workers}, []
        ),
        "graphs": Variant("1 trial at a time, loader=device, cuda_graphs", fast, []),
        "per-gpu": Variant(
            f"--devices 0 --trials-per-gpu {k}, loader=device, cuda_graphs",
            fast,
            ["--devices", "0", "--trials-per-gpu", str(k)],
        ),
    }
    return [variants["naive"], *(variants[name] for name in profile.wall_variants if name != "naive")]


# -- section: sweep-wall ----------------------------------------------------------------


WALL_BASELINE_SHARE = 0.6  # under --time-box, the naive baseline's `run --timeout` share of the time left
WALL_FINISH_S = 15.0  # kept back from each `run --timeout` for the trial in flight and finalize()


@dataclass
class SweepRun:
    wall: float
    stats: dict[str, int]
    where: str


def bench_wall(profile: Profile, report: Report, *, logs: Path) -> None:
    """Each variant ``repeats`` times, interleaved so that a burst of load hits all alike; best of each.

    A variant's rows are saved once its last repeat ends. Under ``--time-box`` each `run` gets a
    ``--timeout`` (no new trial after it); if that cuts the baseline short, the other variants
    run as many trials as it finished (`run --trials`), so that their wall times still compare.
    """
    variants = sweep_variants(profile)
    runs: dict[int, list[SweepRun]] = {i: [] for i in range(len(variants))}
    failure = {i: "`run` failed (see wall-*.log)" for i in range(len(variants))}
    baseline: SweepRun | None = None
    target = profile.sweep_trials
    for repeat in range(profile.repeats):
        for index, variant in enumerate(variants):
            result = run_sweep_once(
                profile,
                variant,
                name=f"bench-wall-{index}",
                logs=logs,
                tag=f"{index}-{repeat}",
                timeout=_wall_timeout(index, len(variants)),
                trials=target,
            )
            if isinstance(result, str):
                failure[index] = result
            else:
                runs[index].append(result)
                target = min(target, result.stats["finished"] or target) if index == 0 else target
            if repeat == profile.repeats - 1:
                best = add_wall_rows(
                    report,
                    profile,
                    variant,
                    runs[index],
                    baseline=baseline,
                    failure=failure[index],
                    first=index == 0,
                    asked=profile.sweep_trials if index == 0 else target,
                )
                baseline = best if index == 0 else baseline


def _wall_timeout(index: int, count: int) -> float | None:
    """`run --timeout` for variant ``index`` of ``count``: the baseline, the slowest, gets the largest share."""
    left = BOX.left()
    if left is None:
        return None
    share = WALL_BASELINE_SHARE if index == 0 and count > 1 else 1 / (count - index)
    return max(1.0, (left - WALL_FINISH_S) * share)


def add_wall_rows(
    report: Report,
    profile: Profile,
    variant: Variant,
    runs: Sequence[SweepRun],
    *,
    baseline: SweepRun | None,
    failure: str,
    first: bool,
    asked: int,
) -> SweepRun | None:
    """Wall s and trained epochs/s of the best run (``first``: the baseline's own); no wall ratio when trial counts differ."""
    if not runs:
        report.add(Row("sweep-wall", "wall s", variant.label, None, "s", note=failure))
        return None
    best = min(runs, key=lambda r: r.wall)
    baseline = best if first else baseline
    stats = best.stats
    if stats["finished"] < asked:
        trials = f"{stats['finished']} of {asked} trials (`run --timeout` at the time box)"
    elif asked < profile.sweep_trials:
        trials = f"{asked} trials (as many as the baseline finished within the time box)"
    else:
        trials = f"{asked} trials"
    setting = f"{variant.label}; {trials}"
    walls = ", ".join(f"{r.wall:.1f}" for r in runs)
    states = (
        f"{stats['complete']} complete, {stats['pruned']} pruned, {stats['failed']} failed, {stats['epochs']} epochs"
    )
    same = baseline is not None and baseline.stats["finished"] == stats["finished"]
    speedup = f"; {baseline.wall / best.wall:.2f}x faster" if same and baseline is not best else ""
    compare = "" if same or baseline is None else "; trial counts differ from the baseline's: compare trained epochs/s"
    report.add(
        Row(
            "sweep-wall",
            "wall s",
            setting,
            best.wall,
            "s",
            baseline=baseline.wall if same else None,
            note=f"best of [{walls}] s; {states}{speedup}{compare}; study in {best.where}",
        )
    )
    base_rate = baseline.stats["epochs"] / baseline.wall if baseline is not None else None
    report.add(
        Row(
            "sweep-wall",
            "trained epochs/s",
            setting,
            stats["epochs"] / best.wall,
            "epochs/s",
            baseline=base_rate,
            note="epochs trained / wall: comparable even when pruning differs",
        )
    )
    return best


def run_sweep_once(
    profile: Profile,
    variant: Variant,
    *,
    name: str,
    logs: Path,
    tag: str,
    timeout: float | None = None,
    trials: int | None = None,
) -> SweepRun | str:
    """One `hvit-sweep run` (as ``python -m hvit_sweeps``) in a fresh root; else why it gave nothing.

    ``trials``: `run --trials`, when fewer than the study's; ``timeout``: `run --timeout`.
    """
    if BOX.over(WALL_FINISH_S):
        return NOT_STARTED
    make = gpu_sweep_study if profile.gpu_plan else cpu_sweep_study
    root = Path(tempfile.mkdtemp(prefix=f"wall-{tag}-", dir=logs))
    path = root / "study.toml"
    path.write_text(to_toml(make(profile, name, variant.fixed)))
    print(f"  sweep-wall {variant.label} ({tag}) ...", flush=True)
    command = [
        sys.executable,
        "-m",
        "hvit_sweeps",
        "run",
        "--study",
        str(path),
        "--root",
        str(root / "store"),
        *variant.flags,
    ]
    command += ["--timeout", f"{timeout:.0f}"] if timeout is not None else []
    command += ["--trials", str(trials)] if trials is not None and trials < profile.sweep_trials else []
    log_path = logs / f"wall-{tag}.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = start_child(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **variant.env})
        try:
            wait_child(process)
        except Stopped as err:
            print(f"    {err}: see {log_path}", flush=True)
            return f"{err} (see {log_path.name})"
    wall = time.perf_counter() - start
    if process.returncode:
        print(f"    `run` exited {process.returncode}: see {log_path}", flush=True)
        return f"`run` exited {process.returncode} (see {log_path.name})"
    return SweepRun(wall, study_stats(root / "store", name), root.name)


def study_stats(store: Path, name: str) -> dict[str, int]:
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(store / "optuna.journal")))
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    trials = [
        t for t in trials if not t.user_attrs.get("hvit.surplus")
    ]  # extra asks of parallel workers, failed at once
    counts = {
        state.name.lower(): sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    return {
        "complete": counts["complete"],
        "pruned": counts["pruned"],
        "failed": counts["fail"],
        "finished": sum(counts.values()),
        "epochs": sum(int(t.user_attrs.get("hvit.epoch", 0)) for t in trials),
    }


# -- section: tracking-overhead ---------------------------------------------------------


class CallTimer:
    """Wall time spent inside wrapped methods, outermost calls on the main thread only."""

    def __init__(self) -> None:
        self.calls: list[tuple[dt.datetime, float, str]] = []
        self._depth = 0

    def wrap(self, cls: type, *, names: Sequence[str] | None = None) -> Callable[[], None]:
        originals = {}
        for name in names or [n for n in vars(cls) if not n.startswith("_") and callable(vars(cls)[n])]:
            originals[name] = vars(cls)[name]
            setattr(cls, name, self._timed(cls.__name__, name, originals[name]))
        return lambda: [setattr(cls, n, f) for n, f in originals.items()]

    def _timed(self, owner: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread() or self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            began, start = dt.datetime.now(), time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                self.calls.append((began, time.perf_counter() - start, f"{owner}.{name}"))

        return timed

    def within(self, windows: Sequence[tuple[dt.datetime, dt.datetime]]) -> dict[str, float]:
        """Seconds per method, for calls that began inside one of ``windows``."""
        totals: dict[str, float] = {}
        for began, seconds, name in self.calls:
            if any(a <= began <= b for a, b in windows):
                totals[name] = totals.get(name, 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


TRACKING_SHARES = (0.3, 0.4)  # under --time-box: the first direct pass's and the tracked run's shares of the time left


def bench_tracking(profile: Profile, report: Report, *, logs: Path) -> None:
    """An in-process sweep with MLflow calls timed, between two passes of the same configs through train() alone.

    Under ``--time-box`` each part stops starting trials at its share; only trials measured in
    all three parts are compared.
    """
    setting = "in-process `run` vs the same configs through train()"
    if BOX.over():
        report.add(Row("tracking-overhead", "trial time s (tracked)", setting, None, "s", note=NOT_STARTED))
        return
    from mlflow import MlflowClient

    from hvit_sweeps.tracking import Tracker

    root = Path(tempfile.mkdtemp(prefix="tracking-", dir=logs))
    make = _gpu_tracking_study if profile.gpu_plan else cpu_sweep_study
    path = root / "study.toml"
    path.write_text(to_toml(make(profile, "bench-tracking", NAIVE)))
    print("  tracking-overhead: direct train() pass 1 ...", flush=True)
    first = direct_durations(path, profile, until=_box_share(TRACKING_SHARES[0]))
    timer = CallTimer()
    undo = [timer.wrap(Tracker), timer.wrap(MlflowClient)]
    print("  tracking-overhead: tracked sweep ...", flush=True)
    share = _box_share(TRACKING_SHARES[1])
    try:
        trials = run_inprocess(
            path, root / "store", profile, timeout=None if share is None else share - time.monotonic()
        )
    finally:
        for restore in undo:
            restore()
    print("  tracking-overhead: direct train() pass 2 ...", flush=True)
    second = direct_durations(path, profile, only=set(first), until=_box_share(1.0))
    add_tracking_rows(report, trials, timer, first, second)


def _box_share(fraction: float) -> float | None:
    """The monotonic time at which ``fraction`` of the time box's remaining seconds will have passed."""
    left = BOX.left()
    return None if left is None else time.monotonic() + max(0.0, left) * fraction


def _gpu_tracking_study(profile: Profile, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    study = cpu_sweep_study(profile, name, extra)
    study["max_epochs"] = profile.tracking_epochs
    study["fixed"].update(
        {
            "data.max_train_samples": profile.sweep_samples,
            "data.batch_size": profile.batch_size,
            "data.loader": "device",
            "runtime.amp": True,
            "runtime.cuda_graphs": True,
        }
    )
    return study


def run_inprocess(
    path: Path, store: Path, profile: Profile, *, timeout: float | None = None, study_name: str = "bench-tracking"
) -> list[Any]:
    """``hvit-sweep run`` in this process, so its MLflow calls can be timed; ``timeout``: no trial starts after it."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from hvit_sweeps import console as hvit_console
    from hvit_sweeps.cli import app

    hvit_console.console.quiet = True
    try:
        limit = [] if timeout is None else ["--timeout", f"{max(1.0, timeout):.0f}"]
        app(
            ["run", "--study", str(path), "--root", str(store), "--device", profile.device, *limit],
            standalone_mode=False,
        )
    finally:
        hvit_console.console.quiet = False
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(store / "optuna.journal")))
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def direct_durations(
    path: Path, profile: Profile, *, only: set[tuple] | None = None, until: float | None = None
) -> dict[tuple, float]:
    """train() alone for every point of the study's grid (same configs, same data, no MLflow, no Optuna), by params.

    ``only``: just these points; ``until``: start none after this monotonic time.
    """
    import itertools

    import optuna

    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.study import load_study
    from hvit_sweeps.train import train

    spec, _ = load_study(str(path))
    cli = {"runtime.device": profile.device}
    base = spec.trial_config({}, cli)
    splits = load_dataset(base.data, seed=base.seed)
    grid = spec.grid_space() or {}
    durations = {}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=False))
        if (only is not None and _key(params) not in only) or (until is not None and time.monotonic() >= until):
            continue
        overrides = spec.suggest(optuna.trial.FixedTrial(params))
        with tempfile.TemporaryDirectory(prefix="bench-direct-") as tmp:
            config = spec.trial_config(overrides, {**cli, "checkpoint_path": str(Path(tmp) / "best.pth")})
            start = time.perf_counter()
            train(config, splits=splits)
            durations[_key(params)] = time.perf_counter() - start
    return durations


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def add_tracking_rows(
    report: Report, trials: Sequence[Any], timer: CallTimer, first: dict[tuple, float], second: dict[tuple, float]
) -> None:
    done = [t for t in trials if t.duration is not None and _key(t.params) in first and _key(t.params) in second]
    if not done:
        report.add(
            Row(
                "tracking-overhead",
                "trial time s (tracked)",
                "in-process `run` vs the same configs through train()",
                None,
                "s",
                note="no trial was measured in all three parts (time box?)",
            )
        )
        return
    tracked = {t.number: t.duration.total_seconds() for t in done}
    direct = {t.number: (first[_key(t.params)] + second[_key(t.params)]) / 2 for t in done}
    sums = [sum(first[k] for k in second), sum(second.values())]
    noise = abs(sums[0] - sums[1]) / statistics.mean(sums)
    extra = statistics.median(tracked[n] - direct[n] for n in tracked)
    by_method = timer.within([(t.datetime_start, t.datetime_complete) for t in done])
    mlflow_s = sum(by_method.values())
    top = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in list(by_method.items())[:4])
    setting = f"{len(done)} trials, in-process `run` vs the same configs through train()"
    report.add(
        Row(
            "tracking-overhead",
            "trial time s (tracked)",
            setting,
            sum(tracked.values()),
            "s",
            baseline=sum(direct.values()),
            note=f"baseline: mean of 2 direct passes (sums differ by {noise:.1%}); per trial: "
            f"{', '.join(f'{tracked[n]:.2f}' for n in sorted(tracked))} s tracked; includes Optuna storage and checkpoint upload",
        )
    )
    report.add(
        Row(
            "tracking-overhead",
            "per-trial extra s (median)",
            setting,
            extra,
            "s",
            baseline=statistics.median(direct.values()),
            note="median over trials of tracked minus direct; baseline: median direct trial",
        )
    )
    report.add(
        Row(
            "tracking-overhead",
            "time in MLflow calls",
            setting,
            mlflow_s,
            "s",
            baseline=sum(tracked.values()),
            note=f"outermost Tracker/MlflowClient calls on the main thread within trial windows; ratio = share of "
            f"trial time; {mlflow_s / max(1, len(done)):.2f}s per trial; largest: {top}",
        )
    )


# -- section: sweep-headline --------------------------------------------------------------


# Kept back after each `run --timeout` for the trials in flight and finalize(): K graphed trials of
# ~10 s each for the fast run; one naive 20-epoch trial (~40 s at 25k img/s) for the baseline.
FAST_FINISH_S = 20.0
NAIVE_FINISH_S = 45.0


def headline_variants(profile: Profile) -> tuple[Variant, Variant, str]:
    """(the new defaults, packed; the naive baseline; how K was chosen).

    The fast variant sets no speed flag: loader, precision and step mode are the "auto"
    defaults of `train` on the device. K comes from :mod:`hvit_sweeps.packing`, as
    ``--trials-per-gpu auto`` chooses it, passed explicitly so that this bench also runs
    on a package whose `run` does not take "auto" yet.
    """
    naive = Variant(
        "1 trial at a time, fp32, loader=cpu, eager (naive)",
        {**NAIVE, "runtime.amp": False, "data.num_workers": profile.num_workers},
        [],
    )
    if profile.device != "cuda":
        k = profile.trials_per_gpu
        return Variant(f"defaults, `run --workers {k}` (CPU: no GPU to pack)", {}, ["--workers", str(k)]), naive, "cpu"
    from hvit_sweeps.packing import choose_trials_per_gpu, probe_card, study_trial_bytes
    from hvit_sweeps.study import StudySpec

    spec = StudySpec.model_validate(gpu_sweep_study(profile, "bench-headline", {}))
    packing = choose_trials_per_gpu(study_trial_bytes(spec, {"runtime.device": "cuda"}), probe_card(["0"]))
    fast = Variant(
        f"defaults (bf16, loader=device, CUDA graphs: auto), --devices 0 --trials-per-gpu {packing.k}",
        {},
        ["--devices", "0", "--trials-per-gpu", str(packing.k)],
    )
    return fast, naive, packing.reason


def bench_headline(profile: Profile, report: Report, *, logs: Path) -> None:
    """The N-trial study on the new defaults, then the naive baseline for what time is left.

    The baseline runs one trial at a time under `run --timeout` and gives a rate, trained
    epochs per second (its per-trial costs included); the fast run's epochs at that rate
    are its projected wall time. The two runs' TPE draws differ (K workers offset the
    sampler's seed), so epochs, not trials, are the common unit.
    """
    fast, naive, why = headline_variants(profile)
    print(f"  sweep-headline: {why}", flush=True)
    left = BOX.left()
    fast_timeout = None if left is None else max(1.0, left - profile.headline_naive_s - FAST_FINISH_S)
    got = run_sweep_once(profile, fast, name="bench-headline", logs=logs, tag="headline-fast", timeout=fast_timeout)
    left = BOX.left()
    naive_timeout = profile.headline_naive_s - NAIVE_FINISH_S if left is None else left - NAIVE_FINISH_S
    base = run_sweep_once(
        profile, naive, name="bench-headline", logs=logs, tag="headline-naive", timeout=max(1.0, naive_timeout)
    )
    add_headline_rows(report, profile, fast=(fast, got), naive=(naive, base), why=why)


def add_headline_rows(
    report: Report,
    profile: Profile,
    *,
    fast: tuple[Variant, SweepRun | str],
    naive: tuple[Variant, SweepRun | str],
    why: str,
) -> None:
    (fast_variant, got), (naive_variant, base) = fast, naive
    section, asked = "sweep-headline", profile.sweep_trials
    rate = base.stats["epochs"] / base.wall if isinstance(base, SweepRun) and base.wall > 0 else None
    if isinstance(base, SweepRun):
        report.add(
            Row(
                section,
                "trained epochs/s",
                f"{naive_variant.label}; `run --timeout`",
                rate,
                "epochs/s",
                note=f"{_states(base)} in {base.wall:.1f} s; the baseline's rate (per-trial costs included)",
            )
        )
    else:
        report.add(Row(section, "trained epochs/s", naive_variant.label, None, "epochs/s", note=base))
    if not isinstance(got, SweepRun):
        report.add(Row(section, "wall s", f"{fast_variant.label}; {asked} trials", None, "s", note=got))
        return
    setting = f"{fast_variant.label}; {got.stats['finished']} of {asked} trials"
    projected = got.stats["epochs"] / rate if rate else None
    short = got.stats["finished"] < asked
    cut = (
        f"; cut by `run --timeout` at {got.stats['finished']} trials: {asked} would take about "
        f"{got.wall * asked / max(1, got.stats['finished']):.0f} s at this pace"
        if short
        else ""
    )
    report.add(
        Row(
            section,
            "wall s",
            setting,
            got.wall,
            "s",
            baseline=projected,
            note=f"{_states(got)}{cut}; target < 600 s for 50 trials; baseline: the naive rate over the same "
            f"{got.stats['epochs']} epochs (projected, see the rate row); {why}; study in {got.where}",
        )
    )
    fast_rate = got.stats["epochs"] / got.wall
    report.add(
        Row(
            section,
            "trained epochs/s",
            setting,
            fast_rate,
            "epochs/s",
            baseline=rate,
            note="ratio = speed-up over the naive baseline; target >= 4",
        )
    )


def _states(run: SweepRun) -> str:
    stats = run.stats
    return (
        f"{stats['finished']} trials ({stats['complete']} complete, {stats['pruned']} pruned, {stats['failed']} failed), "
        f"{stats['epochs']} epochs"
    )


# -- section: trial-timeline ---------------------------------------------------------------


GRAPH_WARMUP_STEPS = 3  # hvit_sweeps.steps.GraphedStep.warmup_steps: eager steps before the capture


@dataclass
class TrialTrace:
    """Wall-clock marks of one sweep trial, taken from outside train() (see bench_timeline)."""

    entered: float = 0.0  # TrialObjective.__call__ began
    train_called: float = 0.0
    train_returned: float = 0.0
    left: float = 0.0  # TrialObjective.__call__ returned
    clock: StepClock = field(default_factory=step_clock)


def timeline_study(profile: Profile, trials: int) -> dict[str, Any]:
    """One fixed architecture, ``trials`` learning rates on a grid, no pruning: every trial runs its epochs."""
    study = cpu_sweep_study(profile, "bench-timeline", {})
    size = TINY if profile.timeline_size == "tiny" else SIZES[profile.timeline_size]
    study.update(description="bench: one trial's timeline", trials=trials, max_epochs=profile.timeline_epochs)
    study.pop("stages", None)
    study["space"] = {"optim.lr": {"type": "categorical", "choices": [1e-3 * (i + 1) for i in range(trials)]}}
    study["fixed"] = {
        "data.dataset": "synthetic",
        **_caps(profile.sweep_samples, "data.max_train_samples"),
        **_caps(profile.eval_samples, "data.max_eval_samples"),
        "data.batch_size": profile.batch_size,
        **size,
    }
    return study


def traced_sweep(path: Path, store: Path, profile: Profile) -> tuple[list[TrialTrace], CallTimer]:
    """An in-process `run` with each trial's objective and train() call timed, and MLflow calls timed.

    train() exposes no phase hooks, so the marks are taken around it: a StepClock first among
    its callbacks (epoch ends before the objective's own reporting), and wrappers of the
    objective module's ``train`` and of ``TrialObjective.__call__``.
    """
    from mlflow import MlflowClient

    from hvit_sweeps.sweep import objective
    from hvit_sweeps.tracking import Tracker

    traces: list[TrialTrace] = []
    original_train, original_call = objective.train, objective.TrialObjective.__call__

    def call(self: Any, trial: Any) -> Any:
        traces.append(TrialTrace(entered=time.time()))
        try:
            return original_call(self, trial)
        finally:
            traces[-1].left = time.time()

    def traced_train(config: Any, *, callbacks: Sequence[Any] = (), **kwargs: Any) -> Any:
        trace = traces[-1]
        trace.train_called = time.time()
        try:
            return original_train(config, callbacks=[trace.clock, *callbacks], **kwargs)
        finally:
            trace.train_returned = time.time()

    timer = CallTimer()
    undo = [timer.wrap(Tracker), timer.wrap(MlflowClient)]
    objective.train, objective.TrialObjective.__call__ = traced_train, call
    try:
        run_inprocess(path, store, profile, study_name="bench-timeline")
    finally:
        objective.train, objective.TrialObjective.__call__ = original_train, original_call
        for restore in undo:
            restore()
    return traces, timer


def trial_phases(trace: TrialTrace, mlflow_s: float) -> dict[str, float]:
    """Seconds per phase of one trial; "steps" and "eval" are the epochs, the rest is fixed cost.

    Marks: steps[i] is when step i ended, epoch_ends[e] when epoch e's validation ended.
    The first steps' extra over the median step is warm-up (CUDA-graph capture on CUDA).
    """
    steps, ends = trace.clock.steps, trace.clock.epoch_ends
    per_epoch = len(steps) // max(1, len(ends))
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    step_s = statistics.median(gaps) if gaps else 0.0
    warm = min(len(steps), GRAPH_WARMUP_STEPS + 1)
    last_steps = [steps[(e + 1) * per_epoch - 1] for e in range(len(ends))]
    starts = [trace.train_called, *ends[:-1]]
    # Epoch e+1 starts at epoch e's clock mark, so it also holds the objective's per-epoch
    # reporting (Optuna, MLflow metrics): counted in "of which MLflow calls" as well.
    epoch_steps = sum(last - start for start, last in zip(starts, last_steps, strict=False))
    setup = steps[0] - trace.train_called - step_s
    warmup = max(0.0, steps[warm - 1] - steps[0] - (warm - 1) * step_s)
    # train() announces "building model" after its loaders are made (data on the device).
    built = trace.clock.phases.get("building model", trace.train_called)
    return {
        "trial setup (sample, config, MLflow run, params)": trace.train_called - trace.entered,
        "train() to model build (data to device)": built - trace.train_called,
        "model build, optimizer, to the first step": setup - (built - trace.train_called),
        "first steps' warm-up (CUDA-graph capture on CUDA)": warmup,
        "training steps (steady)": epoch_steps - setup - warmup,
        "per-epoch eval (val pass, loss sync, best-weights copy)": sum(
            e - last for e, last in zip(ends, last_steps, strict=False)
        ),
        "end of train() (best checkpoint written, best weights loaded)": trace.train_returned - ends[-1],
        "trial finish (final metrics, checkpoint upload, end run)": trace.left - trace.train_returned,
        "of which MLflow calls (whole trial)": mlflow_s,
        "trial wall": trace.left - trace.entered,
    }


def startup_costs(profile: Profile) -> dict[str, float]:
    """Once per worker process: a fresh interpreter's imports, the dataset's load, its copy to the device."""
    import torch

    from hvit_sweeps.config import build_config
    from hvit_sweeps.data import load_dataset, make_loaders
    from hvit_sweeps.model import build_model
    from hvit_sweeps.runtime import resolve_device

    start = time.perf_counter()
    code = "import hvit_sweeps.cli, hvit_sweeps.sweep, hvit_sweeps.train, optuna, mlflow, torch"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    imports = time.perf_counter() - start
    study = timeline_study(profile, 1)
    config = build_config(study["fixed"], {"runtime.device": profile.device})
    device = resolve_device(config.runtime.device)
    marks = [time.perf_counter()]
    splits = load_dataset(config.data, seed=config.seed)
    marks.append(time.perf_counter())
    make_loaders(splits, config.data, device=device, seed=config.seed)
    _sync(torch, device)
    marks.append(time.perf_counter())
    build_model(config.model).to(device)
    _sync(torch, device)
    marks.append(time.perf_counter())
    return {
        "worker start (fresh interpreter, imports)": imports,
        "dataset load (once per worker)": marks[1] - marks[0],
        "data to device (make_loaders)": marks[2] - marks[1],
        "model build and to device": marks[3] - marks[2],
    }


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_timeline(profile: Profile, report: Report, *, logs: Path) -> None:
    """One trial's timeline: phases from wall clocks around train() and the objective, plus once-per-worker costs."""
    if BOX.over():
        report.add(Row("trial-timeline", "trial wall", "", None, "s", note=NOT_STARTED))
        return
    startup = startup_costs(profile)
    root = Path(tempfile.mkdtemp(prefix="timeline-", dir=logs))
    path = root / "study.toml"
    path.write_text(to_toml(timeline_study(profile, profile.timeline_trials)))
    print(f"  trial-timeline: {profile.timeline_trials} trials of {profile.timeline_epochs} epochs ...", flush=True)
    traces, timer = traced_sweep(path, root / "store", profile)
    done = [t for t in traces if t.left and t.clock.epoch_ends]
    if not done:
        report.add(Row("trial-timeline", "trial wall", "", None, "s", note="no trial finished (see logs)"))
        return
    per_trial = [trial_phases(t, sum(timer.within([(_dt(t.entered), _dt(t.left))]).values())) for t in done]
    add_timeline_rows(report, profile, startup, per_trial)


def _dt(stamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp)


def add_timeline_rows(
    report: Report, profile: Profile, startup: dict[str, float], per_trial: list[dict[str, float]]
) -> None:
    """A row per phase: the median over trials (a trial after the first, when there is one: warm caches)."""
    setting = f"{profile.timeline_size} model, {profile.timeline_epochs} epochs, defaults on {profile.device}; " + (
        f"median of trials 2-{len(per_trial)}" if len(per_trial) > 2 else "trial 2" if per_trial[1:] else "trial 1"
    )
    later = per_trial[1:] or per_trial
    wall = statistics.median(p["trial wall"] for p in later)
    for name, seconds in startup.items():
        report.add(Row("trial-timeline", name, "once per worker process", seconds, "s"))
    for name in later[0]:
        value = statistics.median(p[name] for p in later)
        base = None if name == "trial wall" else wall
        report.add(
            Row(
                "trial-timeline",
                name,
                setting,
                value,
                "s",
                baseline=base,
                note="ratio = share of the trial's wall time"
                if base
                else f"per trial: {', '.join(f'{p[name]:.2f}' for p in per_trial)} s",
            )
        )
    epochs = statistics.median(
        p["training steps (steady)"] + p["per-epoch eval (val pass, loss sync, best-weights copy)"] for p in later
    )
    report.add(
        Row(
            "trial-timeline",
            "beyond its epochs",
            setting,
            wall - epochs,
            "s",
            baseline=wall,
            note="trial wall minus steady steps and evals; target on H100/H200: <= 1.5 s",
        )
    )


# -- output -----------------------------------------------------------------------------


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"hvit-sweep benchmarks, profile {report.meta['profile']}, {report.meta['device']}, {report.meta['date']}"
    )
    for column in ("section", "name", "setting", "value", "baseline", "ratio", "note"):
        table.add_column(column, justify="right" if column in ("value", "baseline", "ratio") else "left")
    skipped = [row for row in report.rows if row.name == "skipped"]
    for row in report.rows:
        if row.name == "skipped":
            continue
        table.add_row(
            row.section,
            row.name,
            row.setting,
            _fmt(row.value),
            _fmt(row.baseline),
            "" if row.ratio is None else f"{row.ratio:.3f}",
            row.note,
        )
    console = Console(width=220)
    console.print(table)
    reasons: dict[str, list[str]] = {}
    for row in skipped:
        reasons.setdefault(row.note, []).append(row.setting)
    for reason, settings in reasons.items():
        console.print(f"skipped ({reason}): {len(settings)} combinations, e.g. {settings[0]}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(paths: Sequence[Path]) -> str:
    """Saved JSONs as one Markdown table per section, skipped combinations summarised (for RESULTS.md).

    Several files (gpu_all.py writes one per section) are merged; a line per distinct run
    says on what, when and with which profile it was measured.
    """
    runs = [json.loads(path.read_text()) for path in paths]
    out = []
    if len(runs) > 1:
        seen = dict.fromkeys(
            f"{m['device']}, {m['date']}, torch {m['torch']}, profile {m['profile']}" for m in (r["meta"] for r in runs)
        )
        out += [f"Measured on: {line}." for line in seen] + [""]
    all_rows = [row for run in runs for row in run["rows"]]
    for section in SECTIONS:
        rows = [r for r in all_rows if r["section"] == section and r["name"] != "skipped"]
        if not rows:
            continue
        out += [
            f"#### {section}",
            "",
            "| name | setting | value | baseline | ratio | load | note |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
            out.append(
                f"| {r['name']} | {r['setting']} | {_fmt(r['value'])} | {_fmt(r['baseline'])} | {ratio} | {r['load']} | {r['note']} |"
            )
        skipped: dict[str, int] = {}
        for r in all_rows:
            if r["section"] == section and r["name"] == "skipped":
                skipped[r["note"]] = skipped.get(r["note"], 0) + 1
        out += [""] + [f"Skipped: {n} combinations, {reason}." for reason, n in skipped.items()] + [""]
    return "\n".join(out)


def meta(profile: Profile, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    return {
        "profile": profile.name,
        "runtime_device": profile.device,
        "device": device_name(profile.device),
        "cpu": cpu_model(),
        "date": dt.date.today().isoformat(),
        "host": platform.node(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "profile_settings": {k: str(v) for k, v in asdict(profile).items()},
        "time_box_s": args.time_box,
        "data": "synthetic (random CIFAR-100-shaped images, not real)",
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="cpu",
        help="cpu: tiny sizes; gpu: the issue's sizes; gpu-quick: what fits one ~8-minute device "
        "command (gpu_all.py); gpu-dry: gpu-quick's plan on the CPU with tiny sizes",
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--out", type=Path, help="JSON path [default: benchmarks/out/bench-<host>-<date>.json]")
    parser.add_argument("--full", action="store_true", help="train: run every combination, skipping nothing")
    parser.add_argument(
        "--sweep-trials", type=int, help="gpu sweep-wall: trials per variant [default: 16]; the cpu grid has 6"
    )
    parser.add_argument("--repeats", type=int, help="runs per measurement; the best is kept [default: 1]")
    parser.add_argument(
        "--cases",
        type=parse_cases,
        metavar="S/P/L/M,...",
        help="train: only these cases, in this order, e.g. small/bf16/device/eager,small/bf16/device/cuda_graphs",
    )
    parser.add_argument(
        "--k", type=_int_list, metavar="1,2,4,8", help="sweep-throughput: the concurrent process counts"
    )
    parser.add_argument(
        "--time-box",
        type=float,
        metavar="SECONDS",
        help="start no measurement after this many seconds, and stop one in progress; rows so far are kept",
    )
    parser.add_argument("--logs", type=Path, help="worker logs and study files [default: benchmarks/out/logs-<time>]")
    parser.add_argument(
        "--markdown", type=Path, nargs="+", metavar="JSON", help="print saved JSONs as Markdown tables and exit"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",") if item.strip())


def with_overrides(profile: Profile, args: argparse.Namespace) -> Profile:
    """The profile with the command line's --sweep-trials, --repeats, --cases and --k."""
    changes = {"sweep_trials": args.sweep_trials, "repeats": args.repeats, "cases": args.cases, "concurrency": args.k}
    return replace(profile, **{key: value for key, value in changes.items() if value})


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    if args.markdown:
        print(markdown(args.markdown))
        return
    BOX.seconds, BOX.started = args.time_box, time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    profile = with_overrides(PROFILES[args.profile], args)
    if profile.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"--profile {profile.name}: no CUDA GPU is visible here; use --profile cpu")
    report = Report(meta=meta(profile, args))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = args.logs or OUT_DIR / f"logs-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    report.path = args.out or OUT_DIR / f"bench-{report.meta['host']}-{report.meta['date']}.json"
    report.meta["logs"] = str(logs)
    sections = {
        "train": lambda: bench_train(profile, report, logs=logs, full=args.full),
        "sweep-throughput": lambda: bench_throughput(profile, report, logs=logs),
        "sweep-wall": lambda: bench_wall(profile, report, logs=logs),
        "tracking-overhead": lambda: bench_tracking(profile, report, logs=logs),
        "sweep-headline": lambda: bench_headline(profile, report, logs=logs),
        "trial-timeline": lambda: bench_timeline(profile, report, logs=logs),
    }
    timings: dict[str, float] = {}
    report.meta["section_seconds"] = timings
    name = ""
    try:
        for name in args.only or [s for s in SECTIONS if s not in OPT_IN]:
            print(f"[{name}]", flush=True)
            start = time.perf_counter()
            try:
                sections[name]()
            finally:
                timings[name] = time.perf_counter() - start
    except Terminated as err:
        report.meta["stopped"] = f"{err} during {name}: rows measured before it are kept"
        print(f"stopped by {err} during {name}", flush=True)
    finally:
        stop_all_children()
        report.meta.update(loadavg_end=os.getloadavg())
        report.save()
    print_table(report)
    print(f"wrote {report.path}")
    if "stopped" in report.meta:
        sys.exit(143)


if __name__ == "__main__":
    main(sys.argv[1:])
