"""Section ``trial-timeline``: one sweep trial's phases, from wall clocks around ``train()`` and the objective.

Also the once-per-worker costs: a fresh interpreter's imports, the dataset's load and its copy to the device.
"""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_harness import BOX, NOT_STARTED, REPO, Report, Row, caps, to_toml
from profiles import SIZES, TINY, Profile
from sweeps import (
    CallTimer,
    cpu_sweep_study,
    run_inprocess,
)
from workers import StepClock, step_clock

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
        **caps(profile.sweep_samples, "data.max_train_samples"),
        **caps(profile.eval_samples, "data.max_eval_samples"),
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
