"""One command for a lent GPU: the card, then timed steps (bench.py sections, the Fashion-MNIST run).

``benchmarks/gpu/run_all.sh`` installs the carried wheels and runs this (benchmarks/README.md).
Everything goes to ``--out`` (the device tool's $OUT), at most 8 files, each written as soon as
its step ends, a bench.py section's JSON after every row. Two plans (``--plan``):

``headline`` (default; issue 11), profile gpu-headline:

    sweep.json      sweep-headline: the 50-trial depth-width study on 50k/10k synthetic images,
                    new defaults, K from hvit_sweeps.packing; then the naive baseline's rate
    fashion.json    learn_fashion.py: the default model on real Fashion-MNIST, 40 epochs, defaults
    throughput.json sweep-throughput: K = 1 and 4 on one GPU, barrier start, steady-window overlap
    timeline.json   trial-timeline: one trial's phases and its MLflow share, trials of ~7 s

``quick`` (the earlier plan), profile gpu-quick: parity.json (graph_parity.py), train.json,
throughput.json, wall.json, tracking.json.

Both add driver.json (the card, versions, the plan, each step's box, seconds and status),
run.log (everything every step printed) and logs.tar.gz (worker logs, each cut to 200 kB).

A step that reaches its time box gets SIGTERM (bench.py then saves its rows and stops its
children) and, 5 s later, SIGKILL for it and every process it started. Time a step leaves
unused goes to the steps after it. ``--cpu-dry-run`` runs the same plan on the CPU with tiny
sizes (bench.py's gpu-dry profile) to prove the plumbing without a GPU.

    python benchmarks/gpu_all.py --out /tmp/gpu-out                       # on the GPU machine
    python benchmarks/gpu_all.py --out /tmp/dry --cpu-dry-run             # here
    python benchmarks/gpu_all.py --out /tmp/dry --cpu-dry-run --plan quick --steps train --box train=20
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench_harness import REPO, Terminated, stop_on_sigterm, write_json
from gpu_driver import Driver, Step, StepResult, card, last_json, run_boxed, tar_logs

BENCH = REPO / "benchmarks" / "bench.py"
PARITY = REPO / "benchmarks" / "graph_parity.py"
FASHION = REPO / "benchmarks" / "learn_fashion.py"
BENCH_BOX_MARGIN_S = 15.0  # bench.py's own --time-box ends this long before the step's box (at most 40% of it)
MIN_STEP_S = 10.0  # a step with less time than this is skipped


# 100k img/s or more, plus per-trial costs over K=4); the naive baseline gets the last 90 s of
# its box (`run --timeout` for the 50 trials: the box less 125 s, about 220 s). Fashion: 40 epochs of 54k images, about 0.6 s each with graphs, plus the 10k test.
HEADLINE_PLAN = (
    Step("sweep", 360, "sweep-headline"),
    Step("fashion", 50, script="fashion"),
    Step("throughput", 45, "sweep-throughput"),
    Step("timeline", 35, "trial-timeline"),
)
HEADLINE_DRY_PLAN = (
    Step("sweep", 110, "sweep-headline"),
    Step("fashion", 40, script="fashion"),
    Step("throughput", 45, "sweep-throughput"),
    Step("timeline", 60, "trial-timeline"),
)
FASHION_ARGS = {
    # The reference run: 91.0% test with CUDA graphs, batch 512, lr 2e-3, 40 epochs.
    False: ["--epochs", "40", "--batch-size", "512", "--lr", "2e-3"],
    # Plumbing only: the carried files read, trained, evaluated and saved.
    True: [
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--lr",
        "2e-3",
        "--max-train-samples",
        "500",
        "--max-eval-samples",
        "200",
    ],
}
QUICK_PLAN = (
    Step("parity", 35, script="parity"),
    Step("train", 140, "train"),
    Step("throughput", 105, "sweep-throughput"),
    Step("wall", 120, "sweep-wall"),
    Step("tracking", 60, "tracking-overhead"),
)
QUICK_DRY_PLAN = (
    Step("parity", 20, script="parity"),
    Step("train", 60, "train"),
    Step("throughput", 45, "sweep-throughput"),
    Step("wall", 60, "sweep-wall"),
    Step("tracking", 40, "tracking-overhead"),
)
RESERVE_S = 20.0
PLANS = {  # --plan: (GPU plan, its dry run, the bench.py profiles)
    "headline": (HEADLINE_PLAN, HEADLINE_DRY_PLAN, ("gpu-headline", "gpu-headline-dry")),
    "quick": (QUICK_PLAN, QUICK_DRY_PLAN, ("gpu-quick", "gpu-dry")),
}


# -- steps --------------------------------------------------------------------------------


def step_command(driver: Driver, step: Step, target: Path, box: float) -> list[str]:
    """The step's command line; a bench.py section gets its own time box, a little inside the step's."""
    if step.script == "parity":
        return [sys.executable, str(PARITY)]
    if step.script == "fashion":
        data = ["--data-dir", str(driver.fashion_dir)] if driver.fashion_dir else []
        return [sys.executable, str(FASHION), "train", *FASHION_ARGS[driver.dry], *data, "--json", str(target)]
    return [
        sys.executable,
        str(BENCH),
        "--profile",
        driver.profile,
        "--only",
        str(step.section),
        "--out",
        str(target),
        "--logs",
        str(driver.logs / step.name),
        "--time-box",
        f"{bench_box(box):.0f}",
    ]


def run_step(driver: Driver, index: int, *, dry: bool) -> StepResult:
    step = driver.plan[index]
    result = StepResult(step.name, step.planned_s, box_s=round(driver.box_for(index), 1))
    driver.results.append(result)
    if result.box_s < MIN_STEP_S:
        result.status = f"skipped: {result.box_s:.0f} s left of the budget"
        driver.say(f"{step.name}: {result.status}")
        return result
    driver.say(f"{step.name}: time box {result.box_s:.0f} s (planned {step.planned_s:.0f})")
    target = driver.out / f"{step.name}.json"
    command = step_command(driver, step, target, result.box_s)
    start = time.monotonic()
    try:
        result.rc, output, hit = run_boxed(driver, command, box=result.box_s)
    finally:
        result.seconds = round(time.monotonic() - start, 1)
        for partial in driver.out.glob("*.tmp"):
            partial.unlink(missing_ok=True)
    parsed = None
    if step.script == "parity":
        parsed = last_json(output)
        write_json(
            target,
            {
                "rc": result.rc,
                "seconds": result.seconds,
                "result": parsed,
                "output": None if parsed else output[-4000:],
            },
        )
    result.file = target.name if target.exists() else None
    result.status = _status(
        result.rc, hit, saved=target.exists(), parity=parsed if step.script == "parity" else False, dry=dry
    )
    result.status += _fashion_status(target) if step.script == "fashion" and result.rc == 0 else ""
    cut = _rows_cut(target) if step.section else 0
    result.status += f"; {cut} measurement(s) cut by the time box" if cut else ""
    driver.say(f"{step.name}: {result.status} after {result.seconds:.0f} s")
    return result


def _fashion_status(path: Path) -> str:
    """learn_fashion.py's test accuracy, for the summary (its JSON has the rest)."""
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
        record = json.loads(path.read_text())
        return f": test acc1 {record['test_metrics']['test_acc1']:.4f} after {record['epochs_run']} epochs"
    return ""


def bench_box(box: float) -> float:
    """bench.py's own time box: it stops itself, and saves, before the driver's SIGTERM."""
    return max(box - BENCH_BOX_MARGIN_S, box * 0.6)


def _status(rc: int | None, hit: bool, *, saved: bool, parity: dict[str, Any] | None | bool, dry: bool) -> str:
    """``parity``: False for a bench.py step, else graph_parity.py's JSON (None if it printed none)."""
    if hit:
        return "stopped at its time box" + ("; rows measured before it are saved" if saved else "")
    if isinstance(parity, dict) and {"passed", "worst_relative_difference"} <= parity.keys():
        worst, tolerance = parity.get("worst_relative_difference"), parity.get("tolerance")
        return f"{'ok' if parity.get('passed') else 'failed'}: worst relative loss difference {worst:.2e} (tolerance {tolerance})"
    if rc == 0:
        return "ok" + (" (no CUDA on a dry run: nothing measured)" if parity is None and dry else "")
    if rc == 143:
        return "stopped by SIGTERM; rows measured before it are saved"
    return f"failed (exit {rc}; see run.log)"


# -- helpers ------------------------------------------------------------------------------


def _rows_cut(path: Path) -> int:
    """Rows of a bench.py JSON that its time box stopped or never started."""
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError):
        return sum(row["note"].startswith("time box") for row in json.loads(path.read_text())["rows"])
    return 0


def summary(driver: Driver) -> str:
    lines = [f"{'step':<11} {'status':<60} {'box s':>6} {'took s':>7}"]
    lines += [f"{r.name:<11} {r.status[:60]:<60} {r.box_s:>6.0f} {r.seconds:>7.0f}" for r in driver.results]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder (the device tool's $OUT)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same plan on the CPU, tiny sizes")
    parser.add_argument(
        "--plan", choices=sorted(PLANS), default="headline", help="headline (issue 11) or quick (the earlier plan)"
    )
    parser.add_argument(
        "--fashion-dir",
        type=Path,
        help="Fashion-MNIST in torchvision's layout (run_all.sh unpacks the carried .fmnist/ there)",
    )
    parser.add_argument("--budget", type=float, help="seconds for the whole run [default: the plan's sum plus 20]")
    parser.add_argument(
        "--steps",
        help="only these steps, comma-separated (headline: sweep,fashion,throughput,timeline; "
        "quick: parity,train,throughput,wall,tracking)",
    )
    parser.add_argument("--box", action="append", default=[], metavar="STEP=SECONDS", help="a step's planned time box")
    parser.add_argument("--wheels", type=Path, help="the carried wheels, checked against what is installed (card)")
    return parser.parse_args(argv)


def choose_plan(args: argparse.Namespace) -> tuple[Step, ...]:
    gpu, dry, _ = PLANS[args.plan]
    plan = dry if args.cpu_dry_run else gpu
    boxes = {name: float(seconds) for name, seconds in (item.split("=", 1) for item in args.box)}
    wanted = set(args.steps.split(",")) if args.steps else {step.name for step in plan}
    unknown = (wanted | set(boxes)) - {step.name for step in plan}
    if unknown:
        sys.exit(f"unknown step(s) {sorted(unknown)}: use {', '.join(step.name for step in plan)}")
    return tuple(replace(step, planned_s=boxes.get(step.name, step.planned_s)) for step in plan if step.name in wanted)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    plan = choose_plan(args)
    budget = args.budget or sum(step.planned_s for step in plan) + RESERVE_S
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = REPO / "benchmarks" / "out" / f"gpu-all-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    stop_on_sigterm()
    with (args.out / "run.log").open("a") as log:
        driver = Driver(
            out=args.out,
            logs=logs,
            profile=PLANS[args.plan][2][args.cpu_dry_run],
            plan=plan,
            deadline=time.monotonic() + budget - RESERVE_S / 2,
            log=log,
            dry=args.cpu_dry_run,
            fashion_dir=args.fashion_dir,
        )
        driver.record.update(
            mode="cpu dry run" if args.cpu_dry_run else "gpu",
            profile=driver.profile,
            budget_s=budget,
            plan=[asdict(step) for step in plan],
            logs=str(logs),
            command=" ".join(sys.argv),
        )
        driver.say(
            f"budget {budget:.0f} s, profile {driver.profile}, steps {', '.join(s.name for s in plan)}; out {args.out}"
        )
        code = 0
        try:
            if not card(driver, wheels=args.wheels):
                code = 3
            else:
                for index in range(len(plan)):
                    result = run_step(driver, index, dry=args.cpu_dry_run)
                    driver.save()
                    code = code or (0 if result.status.startswith(("ok", "skipped")) else 1)
        except Terminated as err:
            driver.say(f"interrupted by {err}: what was written so far is kept")
            if driver.results and driver.results[-1].status == "not run":
                driver.results[-1].status = f"interrupted by {err}"
            code = 143
        finally:
            driver.record["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            driver.save()
            driver.say(f"logs.tar.gz: {tar_logs(logs, args.out / 'logs.tar.gz')} logs")
            driver.say("summary\n" + summary(driver))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
