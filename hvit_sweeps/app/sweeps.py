"""`run` and `worker`: check every flag, then connect to the study, run its trials and say how to go on.

Every flag, ``--set`` value and the study file are checked before torch and MLflow
load, so a mistake is one line within a second. After that the commands print as
they go: a sweep is long, and its progress is its output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvit_sweeps.app.links import tracking_hint
from hvit_sweeps.app.options import SweepOptions, resume_command, worker_args
from hvit_sweeps.errors import SweepFault
from hvit_sweeps.saying import saying

if TYPE_CHECKING:
    from hvit_sweeps.console import SweepDashboard
    from hvit_sweeps.data import DatasetSplits
    from hvit_sweeps.sweep import Connected, Sweep

__all__ = ["RunRequest", "choose_packing", "run_study", "run_worker_process"]


@dataclass(frozen=True)
class RunRequest:
    """What `run` was asked for, beyond the study and its overrides."""

    trials: int | None = None
    workers: int | None = None
    devices: str | None = None  # CUDA indices as given: "0,1,2,3"
    trials_per_gpu: str = "auto"  # a positive number, or auto
    resume: bool = False
    budget: str | None = None


def run_study(opts: SweepOptions, config_layer: dict[str, Any], request: RunRequest) -> int:
    """`run`: the study's trials in this process or in worker processes; the exit code."""
    from hvit_sweeps.budget import parse_budget

    checked = opts.spec(config_layer)  # the study file with every flag and --set value: before torch and MLflow
    budget, workers = request.budget, request.workers
    limit = parse_budget(budget) if budget is not None else None  # checked before anything is created
    # The first line comes before the imports, which take seconds (MLflow, torch).
    with saying(f"run: study {opts.study}: starting (importing MLflow and PyTorch)"):
        from hvit_sweeps.budget import budget_line, settle_budget
        from hvit_sweeps.console import SweepDashboard, console, sweep_summary
        from hvit_sweeps.data import load_dataset
        from hvit_sweeps.interrupt import graceful_interrupts
        from hvit_sweeps.sweep import close_study_run, connect, finalize, worker_plan
        from hvit_sweeps.sweep.background import start_background

        sweep = opts.build(*checked)
    devices = request.devices.split(",") if request.devices else None
    gpus, per_gpu = choose_packing(sweep, devices, request.trials_per_gpu, workers=workers)
    plans = worker_plan(workers=workers, devices=gpus, trials_per_gpu=per_gpu)
    # Check the data before creating anything: a study is never bound to data it could not load.
    with saying(f"loading data: {sweep.base_config.data.dataset}"):
        splits = load_dataset(sweep.base_config.data, seed=sweep.base_config.seed)
    add = None if request.resume else (request.trials if request.trials is not None else sweep.spec.trials)
    with saying("opening the study and its MLflow runs"):
        connected = connect(sweep, add_trials=add, workers=len(plans))
        settle_budget(connected.study, limit)
    console.print(sweep_banner(sweep, connected, len(plans)))
    if limit is not None:
        console.print(f"budget: {limit.describe()}, from now, across every worker of the study")
    names = [o.metric for o in sweep.spec.objectives]
    try:
        with (
            graceful_interrupts(console.print),
            SweepDashboard(study_name=sweep.study_name, target=connected.target, metric_names=names) as dash,
        ):
            run_trials(sweep, connected, plans, splits, dash=dash, timeout=opts.timeout)
        finalize(sweep, connected, plots=False)  # it writes to both stores: a fault here is one line too
    except SweepFault as fault:  # a full disk, a database or server that stays away: one line, and how to go on
        close_study_run(sweep, connected, "FAILED")
        raise SweepFault(f"{fault}; then continue with: {resume_command(sweep, opts.study)}") from None
    except KeyboardInterrupt:
        close_study_run(sweep, connected, "KILLED")
        console.print(
            "interrupted: finished trials are saved; the trial in progress is closed and queued to run again,"
            " with the same params, first on the next run."
        )
        console.print(f"continue with: {resume_command(sweep, opts.study)}", soft_wrap=True)
        return 130
    except BaseException:
        close_study_run(sweep, connected, "FAILED")
        raise
    console.print(sweep_summary(connected.study, metric_names=names))
    if (line := budget_line(connected.study)) is not None:
        console.print(line)
    console.print(tracking_hint(sweep, connected), soft_wrap=True)  # links must not be folded
    # Off the critical path: `best --export` and `report` wait for it, and say so.
    log = start_background(
        spec_path=sweep.spec_path, study_name=sweep.study_name, storage_url=sweep.storage_url,
        tracking_uri=sweep.tracking_uri, root=sweep.root, cli=sweep.cli,
    )  # fmt: skip
    what = f"the best {min(sweep.spec.keep_top_k or 5, connected.target)} trials' visuals" if sweep.spec.visuals else ""
    console.print(
        f"drawing the study plots{' and ' + what if what else ''} in the background, at low priority "
        f"(`best --export` and `report` wait for them; log: {log})",
        soft_wrap=True,
    )
    return 0


def run_worker_process(
    opts: SweepOptions, config_layer: dict[str, Any], *, trials: int | None, worker_index: int | None
) -> int:
    """`worker`: join a study and run its trials until its target is reached; the exit code."""
    checked = opts.spec(config_layer)  # every flag and --set value, before torch and MLflow load
    from hvit_sweeps.console import console
    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.interrupt import graceful_interrupts
    from hvit_sweeps.sweep import connect, finalize, run_worker

    sweep = opts.build(*checked)
    index = worker_index if worker_index is not None else os.getpid()  # draws differ by trial number, not by this
    # Check the data before creating anything: a study is never bound to data it could not load.
    console.print(f"loading data: {sweep.base_config.data.dataset}")
    splits = load_dataset(sweep.base_config.data, seed=sweep.base_config.seed)
    connected = connect(sweep, workers=2)
    console.print(f"worker {index} on study {sweep.study_name}: target {connected.target} trials")
    try:
        with graceful_interrupts(console.print):
            summary = run_worker(sweep, connected, max_trials=trials, timeout=opts.timeout, splits=splits)
    except SweepFault as fault:
        raise SweepFault(f"{fault}; then start the worker again to continue") from None
    except KeyboardInterrupt:
        console.print(
            "interrupted: the trial in progress is closed and queued to run again with the same params;"
            " start the worker again to continue"
        )
        return 130
    console.print(f"worker {index}: ran {summary.ran} trials, stopped: {summary.reason}")
    if worker_index is None:
        finalize(sweep, connected)  # a standalone worker may be the last one; runs started by `run` leave this to it
    return 0


def choose_packing(
    sweep: Sweep, devices: list[str] | None, trials_per_gpu: str, *, workers: int | None
) -> tuple[list[str] | None, int]:
    """GPUs to pin workers to and trials per GPU; with `auto` on a CUDA host, every visible GPU is packed.

    ``trials_per_gpu`` is a positive number or ``auto``, as the command line checked it.
    """
    if trials_per_gpu != "auto":
        return devices, int(trials_per_gpu)
    if workers is not None or not sweep.base_config.runtime.device.startswith(("auto", "cuda")):
        return devices, 1  # processes asked for by count, or a CPU or MPS run: nothing to pack
    import torch

    from hvit_sweeps import packing
    from hvit_sweeps.console import console

    card = packing.probe_card(devices)
    if card is None:
        return devices, 1  # no CUDA here: one process, as before
    gpus = devices or [str(i) for i in range(torch.cuda.device_count())]
    trials = packing.stored_trials(sweep.storage_url, sweep.root, sweep.study_name)
    per_trial, basis = packing.per_trial_bytes(sweep.spec, sweep.cli, trials)  # measured peaks once there are some
    chosen = packing.choose_trials_per_gpu(per_trial, card, gpus=len(gpus), basis=basis)
    console.print(chosen.reason)
    return gpus, chosen.k


def run_trials(
    sweep: Sweep,
    connected: Connected,
    plans: list[dict[str, str]],
    splits: DatasetSplits,
    *,
    dash: SweepDashboard,
    timeout: float | None,
) -> None:
    """The trials of `run`: in this process, or in one worker process per plan, shown live."""
    from hvit_sweeps.console import console
    from hvit_sweeps.sweep import launch_workers, run_worker

    dash.refresh(connected.study)
    if len(plans) == 1 and not plans[0]:
        run_worker(sweep, connected, timeout=timeout, display=dash, splits=splits, visuals=False)  # drawn after
        return
    log_dir = sweep.root / "logs" / sweep.study_name
    args = worker_args(sweep, timeout=timeout)
    codes = launch_workers(plans, worker_args=args, log_dir=log_dir, poll=lambda: dash.refresh(connected.study))
    if any(codes):
        console.print(f"[red]workers exited with {codes}[/red]: see {log_dir}/worker-*.log")


def sweep_banner(sweep: Sweep, connected: Connected, workers: int) -> str:
    """The lines `run` prints once the study is open: what runs, on which data, with which notes."""
    from hvit_sweeps.data import describe_dataset
    from hvit_sweeps.runtime import resolve_device, runtime_notes

    config = sweep.base_config
    info = describe_dataset(config.data)
    style = "bold yellow" if info.synthetic else "bold"
    notes = runtime_notes(config.runtime, resolve_device(config.runtime.device))
    return "\n".join(
        [
            (
                f"study [bold]{sweep.study_name}[/bold] ({sweep.spec_path.name}): target {connected.target} trials, "
                f"{workers} worker(s), sampler {sweep.spec.sampler.type}, pruner {sweep.spec.pruner.type}"
            ),
            f"[{style}]dataset: {info.label}[/{style}]",
            *(f"[yellow]note:[/yellow] {note}" for note in notes),
        ]
    )
