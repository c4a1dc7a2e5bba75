"""How fast a flag mistake is answered, against ``hvit-sweep --help`` measured in the same run (issue 24).

Each command runs as a whole process (the console script, as a user types it), ``--repeats``
times after one uncounted warm-up round; the rounds alternate the commands so that a change
in the machine's load hits all alike. A row gives the median wall time, its minimum, and the
ratio of the median to ``hvit-sweep --help``'s; the target is a ratio of at most 1.5.
Each mistake must also exit 2 with one ``error:`` line and no traceback.

    python benchmarks/flag_latency.py                 # 5 counted runs of each command
    python benchmarks/flag_latency.py --repeats 3     # on a loaded machine

Saves ``benchmarks/out/flag-latency-<host>-<date>.json`` (``--out``) and prints the table and
its Markdown (RESULTS.md's form); exits 1 if a mistake is answered in any other way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_harness import OUT_DIR, Report, Row, cpu_model, markdown, print_table

SECTION = "flag-latency"
HELP = ("--help",)
HELPS = (HELP, ("train", "--help"))
MISTAKES = (
    ("train", "--epochs", "0"),
    ("train", "--set", "no.such=1"),
    ("train", "--set", "model.embed_dims=64,128"),
    ("run", "--study", "no-such-study"),
    ("run", "--study", "depth-width", "--trials", "0"),
    ("run", "--study", "depth-width", "--set", "optim.lr=abc"),
    ("run", "--study", "depth-width", "--budget", "nonsense"),
    ("best", "--top", "0"),
    ("eval", "--checkpoint", "missing.pth"),
)
LIMIT = 1.5  # issue 24: a mistake within 1.5x the time of `--help`


@dataclass
class Timed:
    """One command's wall times and, for a mistake, what was wrong with its answer (empty: right)."""

    args: tuple[str, ...]
    seconds: list[float] = field(default_factory=list)
    problems: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return " ".join(["hvit-sweep", *self.args])


def executable() -> list[str]:
    """The console script next to this interpreter (a venv's), else on PATH, else ``python -m hvit_sweeps``."""
    beside = Path(sys.executable).with_name("hvit-sweep")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("hvit-sweep")
    return [found] if found else [sys.executable, "-m", "hvit_sweeps"]


def run_once(command: list[str], timed: Timed, *, cwd: Path, mistake: bool) -> float:
    """Wall seconds of one whole process; a mistake's answer is checked on the way."""
    start = time.perf_counter()
    done = subprocess.run([*command, *timed.args], cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    if mistake:
        timed.problems |= {f"exit {done.returncode}"} if done.returncode != 2 else set()
        timed.problems |= {f"{len(errors)} error lines"} if len(errors) != 1 else set()
        timed.problems |= {"a traceback"} if "Traceback" in output else set()
    elif done.returncode != 0:
        timed.problems.add(f"exit {done.returncode}")
    return seconds


def measure(repeats: int) -> list[Timed]:
    """Every command ``repeats`` times, round by round, after an uncounted warm-up round (file caches)."""
    command = executable()
    results = [Timed(args) for args in (*HELPS, *MISTAKES)]
    # A scratch working directory: no command may leave a store or a log in the checkout.
    with tempfile.TemporaryDirectory(prefix="flag-latency-") as tmp:
        for round_ in range(repeats + 1):
            print(f"round {round_}/{repeats}{' (warm-up)' if round_ == 0 else ''} ...", flush=True)
            for timed in results:
                seconds = run_once(command, timed, cwd=Path(tmp), mistake=timed.args not in HELPS)
                if round_:
                    timed.seconds.append(seconds)
    return results


def add_rows(report: Report, results: Sequence[Timed]) -> list[str]:
    """A row per command, its median against `--help`'s; the labels of the mistakes over LIMIT."""
    help_median = statistics.median(next(t for t in results if t.args == HELP).seconds)
    over = []
    for timed in results:
        median = statistics.median(timed.seconds)
        mistake = timed.args not in HELPS
        answer = ("; answer: " + ", ".join(sorted(timed.problems))) if timed.problems else ""
        if mistake and not timed.problems:
            answer = "; exit 2, one error line, no traceback"
        within = ""
        if mistake and median > LIMIT * help_median:
            within = f"; OVER {LIMIT}x `--help`"
            over.append(timed.label)
        elif mistake:
            within = f"; within {LIMIT}x `--help`"
        spread = ", ".join(f"{s:.2f}" for s in timed.seconds)
        report.add(
            Row(
                SECTION,
                "wall s (median)",
                f"`{timed.label}`",
                median,
                "s",
                baseline=help_median,
                note=f"min {min(timed.seconds):.2f} s; runs [{spread}] s{answer}{within}",
            )
        )
    return over


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="counted runs of each command [default: 5]")
    parser.add_argument("--out", type=Path, help="JSON path [default: benchmarks/out/flag-latency-<host>-<date>.json]")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    date = dt.date.today().isoformat()
    path = args.out or OUT_DIR / f"flag-latency-{platform.node()}-{date}.json"
    report = Report(
        meta={
            "profile": SECTION,
            "device": cpu_model(),
            "date": date,
            "host": platform.node(),
            "torch": importlib.metadata.version("torch"),  # the version only: importing it would load it here
            "python": platform.python_version(),
            "repeats": args.repeats,
            "loadavg_start": os.getloadavg(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },
        path=path,
    )
    results = measure(args.repeats)
    over = add_rows(report, results)
    report.meta["loadavg_end"] = os.getloadavg()
    report.save()
    print_table(report)
    print(markdown([path]))
    print(f"wrote {path}")
    if over:
        print(f"over {LIMIT}x `--help`: {'; '.join(over)}")
    wrong = [f"{t.label}: {', '.join(sorted(t.problems))}" for t in results if t.problems]
    for line in wrong:
        print(f"wrong answer: {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
