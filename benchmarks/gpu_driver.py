"""The driver of one device command: its state, child processes in hard time boxes, the card, the log tarball.

A lent GPU gets one command of under 9 minutes (benchmarks/README.md, "GPU"); ``gpu_all.py``
and ``gpu/fashion_study.py`` each run their steps through a :class:`Driver`, which saves
driver.json after every step. A step that reaches its box gets SIGTERM and, a few seconds
later, SIGKILL for it and every process it started.
"""

from __future__ import annotations

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench_harness import REPO, cpu_model, write_json

CHECK_WHEELS = REPO / "benchmarks" / "gpu" / "check_wheels.py"
TERM_BEFORE_S = 5.0  # SIGTERM this long before the box ends, SIGKILL at its end
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


# -- the card --------------------------------------------------------------------------------


def card(driver: Driver, *, wheels: Path | None) -> bool:
    """The machine, the card and the versions in driver.json; False if the project cannot be imported."""
    record = driver.record
    record["card"] = {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu_model(cores=False),
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
    record["card"]["python"] = last_json(output) or {"error": output[-3000:]}
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


def last_json(output: str) -> Any:
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
