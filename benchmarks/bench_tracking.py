"""Section ``tracking-overhead``: trial time with MLflow tracking against ``train()`` alone.

An in-process sweep with its MLflow calls timed, between two passes of the same configs
through ``train()`` without MLflow or Optuna.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_harness import BOX, NOT_STARTED, Report, Row, to_toml
from profiles import Profile
from sweeps import (
    NAIVE,
    CallTimer,
    cpu_sweep_study,
    run_inprocess,
)

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


def direct_durations(
    path: Path, profile: Profile, *, only: set[tuple] | None = None, until: float | None = None
) -> dict[tuple, float]:
    """train() alone for every point of the study's grid (same configs, same data, no MLflow, no Optuna), by params.

    ``only``: just these points; ``until``: start none after this monotonic time.
    """

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
