"""Worker processes: the trial loop of one worker, and launching several on one machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hvit_sweeps import interrupt
from hvit_sweeps.data import DatasetSplits, load_dataset
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_RUN_ID, ATTR_SURPLUS, FAILURE_FILE, TAG_FAILURE
from hvit_sweeps.sweep.objective import TrialObjective, log_best_visuals
from hvit_sweeps.sweep.ranks import write_ranks
from hvit_sweeps.sweep.state import (
    Connected,
    Sweep,
    SweepDisplay,
    study_summary,
    trial_counts,
)

__all__ = ["MAX_FAILURES_IN_ROW", "WorkerSummary", "launch_workers", "run_worker", "worker_plan"]

MAX_FAILURES_IN_ROW = 5  # a sweep whose every trial crashes stops instead of spinning


@dataclass
class WorkerSummary:
    ran: int
    reason: str


def run_worker(
    sweep: Sweep,
    connected: Connected,
    *,
    max_trials: int | None = None,
    timeout: float | None = None,
    display: SweepDisplay | None = None,
    splits: DatasetSplits | None = None,
    visuals: bool = True,
) -> WorkerSummary:
    """Run trials until the study reaches its target, ``max_trials`` or ``timeout``.

    Each iteration is ``study.optimize(n_trials=1)``, so Optuna keeps the heartbeat
    and stale-trial handling; the target check before each ask, and the surplus
    check inside the objective, keep the total across workers exact.
    """
    study = connected.study
    config = sweep.base_config
    splits = splits if splits is not None else load_dataset(config.data, seed=config.seed)
    objective = TrialObjective(sweep, connected, splits, display)
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = failures_in_row = 0
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our display and MLflow report trials
    while True:
        interrupt.check()  # a Ctrl-C that came between two trials
        counts = trial_counts(study)
        if counts["finished"] + counts["running"] >= connected.target and not counts["waiting"]:
            reason = "target reached"
            break
        if max_trials is not None and ran >= max_trials:
            reason = f"ran --trials {max_trials}"
            break
        if deadline is not None and time.monotonic() >= deadline:
            reason = "timeout"
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
        ran += 1
        if objective.tracking_down:
            raise sweep.tracker.unavailable()
        last = next((t for t in study.get_trials(deepcopy=False) if t.number == objective.last_number), None)
        failed = last is not None and last.state == TrialState.FAIL and not last.user_attrs.get(ATTR_SURPLUS)
        failures_in_row = failures_in_row + 1 if failed else 0
        if failures_in_row >= MAX_FAILURES_IN_ROW:
            raise HvitError(
                f"{failures_in_row} trials in a row failed; the last: "
                f"{_failure_reason(sweep, last)}: fix it and rerun with --resume"
            )
        _log_best_so_far(sweep, connected)
        if display is not None:
            display.refresh(study)
    if visuals:  # `run` draws them after, in the background
        log_best_visuals(sweep, connected, splits)
    return WorkerSummary(ran=ran, reason=reason)


def _failure_reason(sweep: Sweep, trial: FrozenTrial | None) -> str:
    run_id = trial.user_attrs.get(ATTR_RUN_ID) if trial else None
    if not run_id:
        return "no MLflow run was started"
    tags = sweep.tracker.client.get_run(run_id).data.tags
    return tags.get(TAG_FAILURE, f"unknown (see the run's {FAILURE_FILE})")


def _log_best_so_far(sweep: Sweep, connected: Connected) -> None:
    """The study's counts and best value on the parent run, one point per finished trial."""
    metrics, step = study_summary(connected.study)
    try:
        sweep.tracker.log_metrics(connected.parent_run_id, metrics, step=step)
        write_ranks(sweep.tracker, connected.study)  # the view's best-first order
    except Exception as err:
        if not sweep.tracker.reachable():
            raise sweep.tracker.unavailable() from err
        raise


def worker_plan(*, workers: int | None, devices: Sequence[str] | None, trials_per_gpu: int) -> list[dict[str, str]]:
    """One environment per worker process: GPUs are assigned round-robin.

    Each process also gets an equal share of the CPU threads: several PyTorch
    processes that each spin up one thread per core slow each other down many
    times over (measured here: 1.3 s trials took 35 s with 3 unthrottled workers).
    """
    if devices:
        count = len(devices) * trials_per_gpu
        if workers is not None and workers != count:
            raise HvitError(
                f"--workers {workers} does not match --devices ({len(devices)}) x --trials-per-gpu "
                f"({trials_per_gpu}) = {count}: drop --workers"
            )
        plans = [{"CUDA_VISIBLE_DEVICES": devices[i % len(devices)]} for i in range(count)]
    else:
        plans = [{} for _ in range(workers or 1)]
    if len(plans) > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // len(plans)))
        plans = [{**plan, "OMP_NUM_THREADS": threads} for plan in plans]
    return plans


def launch_workers(
    plans: list[dict[str, str]],
    *,
    worker_args: list[str],
    log_dir: Path,
    poll: Callable[[], None],
) -> list[int]:
    """Start one ``hvit-sweep worker`` process per plan, poll until all exit; return codes.

    Ctrl-C reaches the workers too (same process group); each ends its trial cleanly.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, env in enumerate(plans):
        log = open(log_dir / f"worker-{index}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "hvit_sweeps", "worker", *worker_args, "--worker-index", str(index)]
        processes.append(
            (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}), log)
        )
    try:
        forwarded = False
        while any(p.poll() is None for p, _ in processes):
            if interrupt.requested() and not forwarded:  # a SIGTERM (docker stop) reached only us
                _signal_all(processes, signal.SIGINT)
                forwarded = True
            poll()
            time.sleep(0.2)
        interrupt.check()
    except KeyboardInterrupt:
        _signal_all(processes, signal.SIGINT)
        for process, _ in processes:
            process.wait()
        raise
    finally:
        for _, log in processes:
            log.close()
    poll()
    return [p.returncode for p, _ in processes]


def _signal_all(processes: list[tuple[subprocess.Popen[bytes], Any]], sig: int) -> None:
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(sig)
