"""What a user feels around a sweep's trials: `hvit-sweep run --study smoke` piped, each line timed.

Runs the command once per source tree, alternating (baseline first), each on a fresh
--root, and reports for each: wall time, time to the first line, the trials' span (first
"trial 0 started" to the "N/N trials" line), the time after the last trial, and the
longest silence at the start (before the first trial) and at the end (after the last).

    python benchmarks/run_latency.py --tree old=/tmp/oldmain --tree new=. --repeats 1

Each tree's package is imported through PYTHONPATH, with this interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ALL_DONE = re.compile(r"(\d+)/\1 trials")


def timed_lines(tree: Path, study: str, extra: list[str]) -> tuple[list[tuple[float, str]], float, int]:
    """Each stdout+stderr line with its time since the start; the wall time; the exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        (Path(tmp) / "studies").symlink_to(tree.resolve() / "studies")
        start = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "hvit_sweeps", "run", "--study", study, "--root", "mlruns", *extra],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        lines = [(time.monotonic() - start, line.rstrip()) for line in process.stdout]
        code = process.wait()
        return lines, time.monotonic() - start, code


def summarise(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    times = [t for t, _ in lines]
    first_trial = next((t for t, line in lines if "trial 0 started" in line), wall)
    last_trial = max((t for t, line in lines if _ALL_DONE.search(line)), default=wall)
    marks = [0.0, *times, wall]

    def longest_gap(low: float, high: float) -> float:
        inside = [m for m in marks if low <= m <= high]
        return max((b - a for a, b in zip(inside, inside[1:], strict=False)), default=0.0)

    return {
        "wall_s": round(wall, 2),
        "first_line_s": round(times[0] if times else wall, 2),
        "trials_s": round(last_trial - first_trial, 2),
        "after_last_trial_s": round(wall - last_trial, 2),
        "longest_silence_start_s": round(longest_gap(0.0, first_trial), 2),
        "longest_silence_end_s": round(longest_gap(last_trial, wall), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree")
    parser.add_argument("--study", default="smoke")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/run_latency.json"))
    args, extra = parser.parse_known_args()
    trees = [(name, Path(path)) for name, path in (t.split("=", 1) for t in args.tree)]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(args.repeats):
        for name, tree in trees:  # alternated: load drifts hit both alike
            lines, wall, code = timed_lines(tree, args.study, extra)
            summary = summarise(lines, wall)
            print(name, "exit", code, json.dumps(summary), flush=True)
            results[name].append(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
