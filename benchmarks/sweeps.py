"""A sweep as the benchmarks run it: the study files, one `hvit-sweep run` as a whole process, or in this one.

Shared by the sections that run the product's sweep (sweep-wall, tracking-overhead,
sweep-headline, trial-timeline): :func:`cpu_sweep_study` and :func:`gpu_sweep_study` write
the same study for every variant, :func:`run_sweep_once` times a `run` in a fresh root, and
:func:`run_inprocess` runs it in this process so that :class:`CallTimer` can time its MLflow calls.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_harness import BOX, NOT_STARTED, REPO, Stopped, caps, start_child, to_toml, wait_child
from profiles import Profile

# -- study files ------------------------------------------------------------------------


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
            **caps(profile.sweep_samples, "data.max_train_samples"),
            **caps(profile.eval_samples, "data.max_eval_samples"),
            "data.batch_size": profile.batch_size,
            **extra,
        }
    )
    return study


NAIVE = {"data.loader": "cpu", "runtime.compile": "off", "runtime.cuda_graphs": False}


@dataclass(frozen=True)
class Variant:
    """One way to run the same study: its fixed settings, `run` flags and extra environment."""

    label: str
    fixed: dict[str, Any]
    flags: list[str]
    env: dict[str, str] = field(default_factory=dict)


# -- one `hvit-sweep run`, as a whole process ---------------------------------------------


WALL_FINISH_S = 15.0  # kept back from each `run --timeout` for the trial in flight and finalize()


@dataclass
class SweepRun:
    wall: float
    stats: dict[str, int]
    where: str


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


# -- `run` in this process, its MLflow calls timed ------------------------------------------


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

        def restore() -> None:
            for name, method in originals.items():
                setattr(cls, name, method)

        return restore

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
