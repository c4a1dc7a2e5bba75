"""Speed benchmarks of hvit-sweep, each figure against a baseline measured in the same run.

Sections (``--only`` picks some; all but the last two run by default):

* ``train``: steady training img/s and warm-up seconds per model size x precision
  x loader x step mode, through the product's :func:`hvit_sweeps.train.train`.
* ``sweep-throughput``: img/s summed over K concurrent training processes.
* ``sweep-wall``: wall time of a fixed N-trial ``hvit-sweep run`` against a naive one.
* ``tracking-overhead``: trial time with MLflow tracking against ``train()`` alone.
* ``sweep-headline``: the N-trial study on the new defaults against the naive rate (issue 11).
* ``trial-timeline``: one sweep trial's phases and its once-per-worker costs.

All data is synthetic (random CIFAR-100-shaped images); speed does not depend on
pixel values. Every training measurement runs in its own process so that no
compile cache, allocator state or thread pool carries over between settings.

Usage::

    python benchmarks/bench.py --profile cpu             # a few minutes on a laptop CPU
    python benchmarks/bench.py --profile gpu --only train
    python benchmarks/bench.py --profile gpu-quick --only train --time-box 150   # one step of gpu_all.py

Each section is a module of its own (``bench_<section>.py``), over the shared harness
(``bench_harness.py``: rows, report, time box, child processes), the run's sizes (``profiles.py``),
the worker processes (``workers.py``) and the sweeps (``sweeps.py``); this module is the
command line that picks a profile and runs the sections.

``--time-box`` makes a run stop starting measurements, and stop one in progress, when its
seconds are spent; rows are saved to ``--out`` as they are measured, so a run killed from
outside keeps what it had.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench_harness import (
    BOX,
    OUT_DIR,
    Report,
    Terminated,
    cpu_model,
    device_name,
    markdown,
    print_table,
    stop_all_children,
    stop_on_sigterm,
)
from bench_headline import bench_headline
from bench_sweep_wall import bench_wall
from bench_throughput import bench_throughput
from bench_timeline import bench_timeline
from bench_tracking import bench_tracking
from bench_train import bench_train
from profiles import PROFILES, Profile, parse_cases
from workers import run_worker

SECTIONS = ("train", "sweep-throughput", "sweep-wall", "tracking-overhead", "sweep-headline", "trial-timeline")
# Sections a bare run (no --only) skips: the headline alone is a 50-trial study.
OPT_IN = ("sweep-headline", "trial-timeline")


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
        print(markdown(args.markdown, SECTIONS))
        return
    BOX.seconds, BOX.started = args.time_box, time.monotonic()
    stop_on_sigterm()
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
    sections: dict[str, Callable[[], None]] = {
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
