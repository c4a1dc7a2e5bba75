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
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench.py"
PARITY = REPO / "benchmarks" / "graph_parity.py"
FASHION = REPO / "benchmarks" / "learn_fashion.py"
CHECK_WHEELS = REPO / "benchmarks" / "gpu" / "check_wheels.py"
TERM_BEFORE_S = 5.0  # SIGTERM this long before the box ends, SIGKILL at its end
BENCH_BOX_MARGIN_S = 15.0  # bench.py's own --time-box ends this long before the step's box (at most 40% of it)
MIN_STEP_S = 10.0  # a step with less time than this is skipped
CARD_S = 60.0  # the card's subprocesses (torch import, nvidia-smi) each stop after this
LOG_TAIL_BYTES = 200_000
TARBALL_LIMIT = 15 * 2**20  # the tool brings back files of at most 16 MiB


@dataclass(frozen=True)
class Step:
    """One timed part of the run: a bench.py ``section``, or a ``script`` (parity, fashion)."""

    name: str
    planned_s: float
    section: str | None = None
    script: str = ""


# Most needed first; the sums leave 20 s of the budget for the card and the log tarball. The
# sweep step's 50 trials are estimated at 200-260 s (about 400 epochs of 45k images at a packed
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


@dataclass
class StepResult:
    name: str
    planned_s: float
    box_s: float = 0.0
    seconds: float = 0.0
    status: str = "not run"
    rc: int | None = None
    file: str | None = None


@dataclass
class Driver:
    """The run's state, saved to driver.json after every step."""

    out: Path
    logs: Path
    profile: str
    plan: tuple[Step, ...]
    deadline: float
    log: TextIO
    dry: bool = False
    fashion_dir: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)
    results: list[StepResult] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[gpu_all {dt.datetime.now().strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def save(self) -> None:
        self.record["steps"] = [asdict(r) for r in self.results]
        write_json(self.out / "driver.json", self.record)

    def box_for(self, index: int) -> float:
        """This step's plan plus whatever the steps before it left unused, within the deadline."""
        left = self.deadline - time.monotonic()
        later = sum(step.planned_s for step in self.plan[index + 1 :])
        return max(0.0, min(left, max(self.plan[index].planned_s, left - later)))


class Interrupted(BaseException):
    """SIGTERM to the driver itself (run_all.sh's outer timeout, or a person)."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def write_json(path: Path, data: Any) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data, indent=2, default=str))
    partial.replace(path)


# -- processes ----------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (children may have left its process group)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end_tree(process: subprocess.Popen, *, grace: float) -> None:
    """SIGTERM the process (bench.py stops its own children), then SIGKILL what is left of the tree."""
    below = descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    for pid in [process.pid, *below, *descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def run_boxed(driver: Driver, command: Sequence[str], *, box: float) -> tuple[int | None, str, bool]:
    """Run ``command`` with its output to run.log and stdout; (exit code, output, hit the box)."""
    driver.log.write(f"$ {' '.join(command)}\n")
    driver.log.flush()
    # Its own process group (not session: the device tool ends what a command leaves only in its session).
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, process_group=0
    )
    captured: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            captured.append(line)
            sys.stdout.write(line)
            driver.log.write(line)
        sys.stdout.flush()
        driver.log.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    hit = False
    try:
        process.wait(max(0.0, box - TERM_BEFORE_S))
    except subprocess.TimeoutExpired:
        hit = True
        end_tree(process, grace=TERM_BEFORE_S)
    except BaseException:
        end_tree(process, grace=TERM_BEFORE_S)
        raise
    finally:
        reader.join(5)
    return process.returncode, "".join(captured), hit


# -- steps --------------------------------------------------------------------------------


def card(driver: Driver, *, wheels: Path | None) -> bool:
    """The machine, the card and the versions in driver.json; False if the project cannot be imported."""
    record = driver.record
    record["card"] = {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "nvidia_smi": _text(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit,pstate",
                "--format=csv",
            ]
        ),
        "nvidia_smi_full": _text(["nvidia-smi"]),
    }
    code, output = _python(_PROBE)
    record["card"]["python"] = _last_json(output) or {"error": output[-3000:]}
    if wheels is not None and wheels.is_dir():
        record["card"]["wheels"] = _python(None, [str(CHECK_WHEELS), str(wheels), "--installed"])[1][-6000:]
    driver.save()
    driver.say(
        f"card: {json.dumps({k: record['card']['python'].get(k) for k in ('device', 'torch', 'cuda', 'python')})}"
    )
    ok = code == 0 and record["card"]["python"].get("imports") == "ok"
    if not ok:
        driver.say(f"the project does not import here, nothing else is run:\n{output[-3000:]}")
    return ok


_PROBE = r"""
import importlib.metadata as md, json, platform, sys, traceback
import torch
info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                device_count=torch.cuda.device_count())
names = ("torchvision", "numpy", "optuna", "mlflow-skinny", "mlflow", "pydantic", "pydantic-core", "sqlalchemy",
         "alembic", "typer", "click", "rich", "typing-extensions", "matplotlib", "pandas", "packaging", "protobuf")
versions = {}
for name in names:
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
info["packages"] = versions
try:
    import mlflow, optuna, pydantic
    import hvit_sweeps.cli, hvit_sweeps.sweep, hvit_sweeps.tracking, hvit_sweeps.train
    info["imports"] = "ok"
    info["paths"] = {m.__name__: m.__file__ for m in (optuna, mlflow, pydantic, hvit_sweeps.cli)}
except Exception:
    info["imports"] = traceback.format_exc()
print(json.dumps(info))
"""


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
        parsed = _last_json(output)
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


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _text(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CARD_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{command[0]}: {err}"
    return (done.stdout + done.stderr).strip()


def _python(code: str | None, args: Sequence[str] = ()) -> tuple[int | None, str]:
    command = [sys.executable, *(["-c", code] if code else []), *args]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=CARD_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {CARD_S:.0f} s"
    return done.returncode, done.stdout + done.stderr


def _last_json(output: str) -> Any:
    """The last JSON object in ``output``: one line, or graph_parity.py's indented block."""
    lines = output.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads("\n".join(lines[start:]))
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(lines[start])
    return None


def tar_logs(logs: Path, target: Path) -> int:
    """Every *.log under ``logs``, each cut to its last LOG_TAIL_BYTES, within TARBALL_LIMIT; the count."""
    count = 0
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(logs.rglob("*.log")):
            data = path.read_bytes()[-LOG_TAIL_BYTES:]
            if target.stat().st_size + len(data) > TARBALL_LIMIT:
                break
            info = tarfile.TarInfo(str(path.relative_to(logs)))
            info.size, info.mtime = len(data), int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
            count += 1
    return count


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
    signal.signal(signal.SIGTERM, _interrupt)
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
        except Interrupted as err:
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
