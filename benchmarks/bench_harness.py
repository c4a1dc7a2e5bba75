"""The small harness every benchmark shares: rows and their report, the time box, child processes, the machine.

* :class:`Row` and :class:`Report`: one figure against a baseline from the same run, saved
  after every row; :func:`print_table` and :func:`markdown` render them (RESULTS.md's tables).
* :class:`TimeBox` (``--time-box``) and the child processes it stops.
* :func:`cpu_model`, :func:`device_name`; :func:`to_toml` for study files; :func:`write_json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "out"


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
        write_json(self.path, {"meta": self.meta, "rows": [asdict(r) for r in self.rows]})


def write_json(path: Path, data: Any) -> None:
    """Written whole or not at all (a temp file, then a rename): a run killed mid-write keeps the last copy."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data, indent=2, default=str))
    partial.replace(path)


def save_json(stem: str, data: Any) -> Path:
    """``benchmarks/out/<stem>-<time>.json``, for the one-off scripts; says where."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"saved {path}")
    return path


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
    """SIGTERM (gpu_all.py's time box for this step, run_all.sh's outer timeout, or the user): save and stop.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    (Optuna's ``catch``, a trial's failure handler) takes it for a failed trial.
    """


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


def stop_on_sigterm() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread, so the run saves its rows and stops its children."""
    signal.signal(signal.SIGTERM, _terminate)


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


def cpu_model(*, cores: bool = True) -> str:
    """The CPU's model name from /proc/cpuinfo, with its core count unless ``cores`` is False."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                return f"{name} ({os.cpu_count()} cores)" if cores else name
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_model()


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


def caps(value: int | None, key: str) -> dict[str, int]:
    """``{key: value}``, or nothing for None (the full split; TOML has no null)."""
    return {} if value is None else {key: value}


# -- output -----------------------------------------------------------------------------


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    meta = report.meta
    table = Table(title=f"hvit-sweep benchmarks, profile {meta['profile']}, {meta['device']}, {meta['date']}")
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


def markdown(paths: Sequence[Path], order: Sequence[str] = ()) -> str:
    """Saved JSONs as one Markdown table per section, skipped combinations summarised (for RESULTS.md).

    Several files (gpu_all.py writes one per section) are merged; a line per distinct run
    says on what, when and with which profile it was measured. Sections come in ``order``,
    then any others in the order their rows were saved.
    """
    runs = [json.loads(path.read_text()) for path in paths]
    out = []
    if len(runs) > 1:
        seen = dict.fromkeys(
            f"{m['device']}, {m['date']}, torch {m['torch']}, profile {m['profile']}" for m in (r["meta"] for r in runs)
        )
        out += [f"Measured on: {line}." for line in seen] + [""]
    all_rows = [row for run in runs for row in run["rows"]]
    for section in dict.fromkeys([*order, *(row["section"] for row in all_rows)]):
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
