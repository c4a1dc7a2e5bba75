"""Worker processes: the trial loop of one worker, and launching several on one machine."""

from __future__ import annotations

import os
import signal
import socket
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
from hvit_sweeps.budget import budget_spent
from hvit_sweeps.data import DatasetSplits, load_dataset
from hvit_sweeps.errors import HvitError, SweepFault
from hvit_sweeps.keys import (
    ATTR_HOST,
    ATTR_PID,
    ATTR_RUN_ID,
    ATTR_SURPLUS,
    FAILURE_FILE,
    TAG_FAILURE,
    TAG_TRIAL_STATE,
    TRACKING_DB,
)
from hvit_sweeps.sweep.faults import SpaceReserve, chain, machine_fault, quiet_store_errors
from hvit_sweeps.sweep.objective import TrialObjective, log_best_visuals
from hvit_sweeps.sweep.ranks import write_ranks
from hvit_sweeps.sweep.state import (
    Connected,
    Sweep,
    SweepDisplay,
    study_summary,
    trial_counts,
)
from hvit_sweeps.sweep.storage import trial_id

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
    config = sweep.base_config
    splits = splits if splits is not None else load_dataset(config.data, seed=config.seed)
    objective = TrialObjective(sweep, connected, splits, display)
    reserve = SpaceReserve(sweep.root)
    quiet_store_errors()
    try:
        summary = _trial_loop(sweep, connected, objective, max_trials=max_trials, timeout=timeout, display=display)
        if visuals:  # `run` draws them after, in the background
            log_best_visuals(sweep, connected, splits)
    except (HvitError, KeyboardInterrupt):
        raise
    except Exception as err:
        _raise_masked(err)
        fault = machine_fault(err, where=_store_path(sweep))
        if fault is None:
            raise
        reserve.release()  # room for the writes that close the trial; `run` closes its parent run next
        _close_own_trials(sweep, connected, fault)
        raise SweepFault(fault) from None
    finally:
        reserve.release()
    return summary


def _trial_loop(
    sweep: Sweep,
    connected: Connected,
    objective: TrialObjective,
    *,
    max_trials: int | None,
    timeout: float | None,
    display: SweepDisplay | None,
) -> WorkerSummary:
    """The loop of :func:`run_worker`; a machine fault of a trial is raised as that trial's error."""
    study = connected.study
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
        if (spent := budget_spent(study)) is not None:  # the study's --budget, shared by all its workers
            reason = spent
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
        ran += 1
        if objective.tracking_down:
            raise sweep.tracker.unavailable()
        error = objective.last_error
        if error is not None and (isinstance(error, SweepFault) or machine_fault(error, where=sweep.root)):
            raise error
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
    return WorkerSummary(ran=ran, reason=reason)


def _raise_masked(err: Exception) -> None:
    """Raise the stop request or SweepFault that ``err`` hides, if any.

    When Optuna's tell fails and so does its own look-up of the trial, it raises
    an UnboundLocalError from its ``finally`` (optuna/study/_optimize.py) in
    place of what went wrong: a database that stayed away, or a stop asked for.
    """
    for link in chain(err)[1:]:
        if isinstance(link, (SweepFault, KeyboardInterrupt)):
            raise link from None


def _store_path(sweep: Sweep) -> Path:
    """What a fault that names no file was writing: SQLite errors come from the embedded MLflow store."""
    root = sweep.root.resolve()
    return root / TRACKING_DB if sweep.tracker.local else root


def _close_own_trials(sweep: Sweep, connected: Connected, fault: str) -> None:
    """After a machine fault: fail this process's RUNNING trials and close their MLflow runs, as far as room allows.

    Optuna's own FAIL record may have been the write that failed. What cannot be
    written now, `run --resume` closes later (the trial's process is dead by then).
    """
    study, storage = connected.study, connected.storage
    tags = {TAG_FAILURE: f"machine fault: {fault}"[:1000], TAG_TRIAL_STATE: "FAIL"}
    try:
        trials = study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - the storage is what failed: --resume recovers the trials
        return
    for trial in trials:
        attrs = trial.user_attrs
        if attrs.get(ATTR_PID) != os.getpid() or attrs.get(ATTR_HOST) != socket.gethostname():
            continue
        try:
            if trial.state == TrialState.RUNNING:
                storage.set_trial_state_values(trial_id(storage, study, trial.number), TrialState.FAIL)
            run_id = attrs.get(ATTR_RUN_ID)
            if run_id and sweep.tracker.run_status(run_id) == "RUNNING":
                sweep.tracker.end_run(run_id, "FAILED", tags=tags)
        except Exception:  # noqa: BLE001 - no room even now: --resume closes it
            continue


def _failure_reason(sweep: Sweep, trial: FrozenTrial | None) -> str:
    run_id = trial.user_attrs.get(ATTR_RUN_ID) if trial else None
    if not run_id:
        return "no MLflow run was started"
    tags = sweep.tracker.run(run_id).tags
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
    When this process ends in any other way, its workers end too: an error here
    signals them, and a SIGKILL of this process reaches them as SIGTERM from the
    kernel (``interrupt.PARENT_ENV``, read by :func:`interrupt.die_with_parent`).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, env in enumerate(plans):
        log = open(log_dir / f"worker-{index}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "hvit_sweeps", "worker", *worker_args, "--worker-index", str(index)]
        processes.append(
            (
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env, interrupt.PARENT_ENV: str(os.getpid())},
                ),
                log,
            )
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
    except BaseException:
        _stop_all(processes)
        raise
    finally:
        for _, log in processes:
            log.close()
    poll()
    return [p.returncode for p, _ in processes]


def _stop_all(processes: list[tuple[subprocess.Popen[bytes], Any]], grace: float = 30) -> None:
    """SIGTERM, then SIGKILL for a worker still there after ``grace`` seconds: none outlives `run`."""
    _signal_all(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process, _ in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _signal_all(processes: list[tuple[subprocess.Popen[bytes], Any]], sig: int) -> None:
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(sig)
