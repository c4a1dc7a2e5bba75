"""The ``hvit-sweep`` command line.

Commands are thin: each turns its flags into config layers or keyword arguments
and calls one function. Flags default to None, meaning "not given", so only what
the user typed overrides the layer below it (defaults, a study file, or a
checkpoint's saved config). Any :class:`~hvit_sweeps.errors.HvitError` or bad
flag value ends as one ``error:`` line on stderr with exit code 2.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

from hvit_sweeps.errors import HvitError, SweepFault
from hvit_sweeps.flags import config_flags, option_group, override_args, parse_sets, set_args
from hvit_sweeps.keys import (
    ATTR_EXPERIMENT,
    ATTR_RUN_ID,
    CHECKPOINT_ARTIFACT,
    JOURNAL_FILE,
    PLOT_HISTORY,
    TRACKING_DB,
    plot_artifact,
)

if TYPE_CHECKING:
    import optuna

    from hvit_sweeps.config import TrainConfig
    from hvit_sweeps.console import SweepDashboard
    from hvit_sweeps.data import DatasetSplits
    from hvit_sweeps.sweep import Connected, Sweep
    from hvit_sweeps.tracking import Tracker

__all__ = ["app", "main"]


# Recent typer vendors click as typer._click; older ones use click itself. Catch both.
_click_modules = {click, getattr(typer, "_click", click)}
_USAGE_ERRORS = tuple(m.exceptions.UsageError for m in _click_modules)
_ABORTS = (click.Abort, typer.Abort)


class _OneLineErrors(TyperGroup):
    """Turns usage errors and HvitError into one line and exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except _USAGE_ERRORS as err:
            hint = f" (see `hvit-sweep {err.ctx.info_name} --help`)" if err.ctx else ""
            _fail(f"{err.format_message()}{hint}" if err.ctx and err.ctx.parent else err.format_message())
        except HvitError as err:
            _fail(str(err), code=err.exit_code)
        except PermissionError as err:  # a read-only folder or file the user pointed at
            _fail(f"permission denied: {err.filename or err}: give this user access, or point the command elsewhere")
        except (*_ABORTS, KeyboardInterrupt):  # Ctrl-C before a command's own handling (while importing torch)
            click.echo("interrupted", err=True)
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, *, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Optuna sweeps of a hierarchical Vision Transformer, tracked in MLflow.",
)


def main() -> None:
    """The console script: run the command, then leave without waiting on interpreter teardown.

    Unloading torch, MLflow and DataLoader workers took 3-4 s after the last line
    (benchmarks/RESULTS.md); every store write is synchronous and already done,
    so the process flushes its output and exits at once.
    """
    code = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


Opt = typer.Option
SetOpt = Annotated[
    list[str] | None,
    Opt("--set", metavar="PATH=VALUE", help="Override any config path, e.g. --set optim.beta2=0.98 (repeatable)."),
]


@app.command()
@config_flags()
def train(
    *,
    config_layer: dict[str, Any],
    set_: SetOpt = None,
    resume: Annotated[
        Path | None, Opt(help="Continue a checkpoint's run: its config, weights, optimizer and schedule.")
    ] = None,
) -> None:
    """Train one HViT and keep its best-by-validation checkpoint."""
    from hvit_sweeps.config import build_config

    sets = parse_sets(set_)
    checkpoint = None
    if resume is None:  # a flag mistake is answered before torch loads (seconds on a busy machine)
        config = build_config(config_layer, sets, source="train flags")

    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.console import (
        TrainProgress,
        console,
        dataset_line,
        train_result_table,
    )
    from hvit_sweeps.interrupt import graceful_interrupts
    from hvit_sweeps.train import train as run_training

    if resume is not None:  # the checkpoint's config is the layer under the flags
        checkpoint = load_checkpoint(resume)
        config = build_config(checkpoint.config.model_dump(mode="json"), config_layer, sets, source="train flags")
    start = checkpoint.epoch + 1 if checkpoint else 1
    try:
        with graceful_interrupts(console.print), TrainProgress(config.epochs, start_epoch=start) as progress:
            result = run_training(config, callbacks=[progress], resume=checkpoint)
    except KeyboardInterrupt:
        console.print(_train_interrupted(config))
        raise typer.Exit(130) from None
    console.print(dataset_line(result.dataset, result.dataset_sizes, result.dataset_fingerprint))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(train_result_table(result))
    if config.checkpoint_path is not None and result.best_epoch:
        console.print(f"best checkpoint: {config.checkpoint_path}")
    if result.status == "diverged":
        raise typer.Exit(1)


def _train_interrupted(config: TrainConfig) -> str:
    """What a stopped `train` kept, and how to go on."""
    kept = [str(p) for p in (config.checkpoint_path, config.last_checkpoint_path) if p is not None and p.is_file()]
    if config.last_checkpoint_path is not None and config.last_checkpoint_path.is_file():
        resume = shlex.join(["hvit-sweep", "train", "--resume", str(config.last_checkpoint_path)])
        return f"interrupted: kept {', '.join(kept)}; continue with: {resume}"
    if kept:
        return f"interrupted: kept the best checkpoint so far, {kept[0]} (add --save-final to be able to --resume)"
    return "interrupted before any epoch ended: nothing was saved"


@app.command("eval")
@config_flags(only=("data.data_dir", "data.download", "data.batch_size", "runtime.device"))
def evaluate_checkpoint(
    *,
    checkpoint: Annotated[Path, Opt(help="A .pth file from `train` or `best --export`.")],
    split: Annotated[str, Opt(help="Which split: val, test or both.")] = "both",
    visuals: Annotated[Path | None, Opt(help="Also write the visuals (confusion matrix, mistakes, ...) here.")] = None,
    config_layer: dict[str, Any],
) -> None:
    """Evaluate a checkpoint on the validation split it was chosen on, and on test."""
    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.console import console, dataset_line, eval_table
    from hvit_sweeps.evaluate import evaluate_checkpoint as run_eval
    from hvit_sweeps.visuals import write_checkpoint_visuals

    if split not in ("val", "test", "both"):
        raise typer.BadParameter(f"{split!r}: use val, test or both", param_hint="--split")
    saved = load_checkpoint(checkpoint)
    results, data = run_eval(saved, overrides=config_layer, splits=("val", "test") if split == "both" else (split,))
    console.print(dataset_line(data.info, data.sizes, data.fingerprint))
    console.print(eval_table(saved, results))
    if visuals is not None:
        for path in write_checkpoint_visuals(saved, data, overrides=config_layer, out_dir=visuals):
            console.print(f"wrote {path}")


# -- sweeps -----------------------------------------------------------------------------

StudyOpt = Annotated[str, Opt("--study", help="A study name from studies/ or a path to a .toml file.")]


def _study_name(value: str | None) -> str | None:
    """Names go into URLs, log folders and database rows: letters, digits, '.', '_' and '-' only."""
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
        raise typer.BadParameter(f"{value!r}: use letters, digits, '.', '_' and '-' (no spaces or slashes)")
    return value


StudyNameOpt = Annotated[
    str | None, Opt(help="Name in the storage (default: the study file's name).", callback=_study_name)
]
StorageOpt = Annotated[
    str | None,
    Opt(
        envvar="HVIT_STORAGE",
        help="Optuna storage: postgresql://..., sqlite:///x.db, journal:PATH, redis://... (default: a journal file under --root).",
    ),
]
TrackingOpt = Annotated[
    str | None,
    Opt(
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: SQLite under --root).",
    ),
]
RootOpt = Annotated[Path, Opt(envvar="HVIT_ROOT", help="Folder of the embedded storage, tracking and artifacts.")]
TimeoutOpt = Annotated[float | None, Opt(help="Stop starting new trials after this many seconds.")]
HeartbeatOpt = Annotated[
    int, Opt(min=1, help="Seconds between RDB heartbeats; a trial silent for 3 of them is retried.")
]
# The config flags a sweep takes for every trial; any other path goes through --set.
SWEEP_CONFIG_PATHS = ("data.dataset", "data.data_dir", "runtime.device", "seed")


@dataclass(frozen=True)
class SweepOptions:
    """What names a study, its stores and its overrides: the options `run` and `worker` share."""

    study: str
    study_name: str | None
    storage: str | None
    tracking_uri: str | None
    sets: list[str] | None
    root: Path
    heartbeat: int
    timeout: float | None

    def sweep(self, config_layer: dict[str, Any]) -> Sweep:
        """The study file loaded and checked with the flags over it, ready to connect."""
        from hvit_sweeps.study import load_study
        from hvit_sweeps.sweep import Sweep

        if self.storage is None or self.tracking_uri is None:
            _check_root(self.root)
        cli = {**config_layer, **parse_sets(self.sets)}
        spec, path = load_study(self.study, cli=cli)
        return Sweep(
            spec=spec,
            spec_path=path.resolve(),
            study_name=self.study_name or spec.name,
            storage_url=self.storage,
            tracking_uri=self.tracking_uri,
            root=self.root,
            cli=cli,
            heartbeat=self.heartbeat,
        )


def _option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_LOCATION = [
    _option("study", StudyOpt),
    _option("study_name", StudyNameOpt, None),
    _option("storage", StorageOpt, None),
    _option("tracking_uri", TrackingOpt, None),
    _option("root", RootOpt, Path("mlruns")),
]
sweep_options = option_group(
    "opts",
    [
        *_LOCATION,
        _option("set_", SetOpt, None),
        _option("heartbeat", HeartbeatOpt, 60),
        _option("timeout", TimeoutOpt, None),
    ],
    lambda set_, **values: SweepOptions(sets=set_, **values),
)


def _check_root(root: Path) -> None:
    """The embedded stores live under --root: it must be, or become, a folder this process can write.

    Only checked here: the folder is created when the stores are first written, so a
    command that refuses its input leaves no empty folder behind.
    """
    if root.exists() and not root.is_dir():
        raise HvitError(f"--root {root} is a file: pass a folder for the embedded stores (default: mlruns)")
    existing = next(p for p in (root, *root.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise HvitError(f"--root {root}: {existing} is a file: pass a folder for the embedded stores")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is read-only" if existing == root else f"cannot be created ({existing} is read-only)"
        raise HvitError(f"--root {root} {what}: pass a writable folder, or --storage and --tracking-uri")


@app.command()
@sweep_options
@config_flags(only=SWEEP_CONFIG_PATHS)
def run(
    *,
    trials: Annotated[int | None, Opt(min=1, help="Trials to add (default: the study file's trials).")] = None,
    workers: Annotated[
        int | None, Opt(min=1, help="Worker processes on this machine (default: 1, in this process).")
    ] = None,
    devices: Annotated[str | None, Opt(help="GPUs to pin workers to, round-robin, e.g. 0,1,2,3.")] = None,
    trials_per_gpu: Annotated[
        str,
        Opt(
            help="Concurrent trials per GPU: a number, or auto (from the largest model's memory and the card; 1 without CUDA)."
        ),
    ] = "auto",
    resume: Annotated[
        bool, Opt(help="Add no trials: fail dead workers' trials, retry them, and finish the target.")
    ] = False,
    budget: Annotated[
        str | None,
        Opt(help="Stop starting trials after this much wall time (2h, 90m) or device time (10gpu-h), all workers."),
    ] = None,
    opts: SweepOptions,
    config_layer: dict[str, Any],
) -> None:
    """Run (or extend) an Optuna study; each trial is logged as a nested MLflow run."""
    from hvit_sweeps.saying import saying

    # The first line comes before the imports, which take seconds (MLflow, torch).
    with saying(f"run: study {opts.study}: starting (importing MLflow and PyTorch)"):
        from hvit_sweeps.budget import budget_line, parse_budget, settle_budget
        from hvit_sweeps.console import SweepDashboard, console, sweep_summary
        from hvit_sweeps.data import load_dataset
        from hvit_sweeps.interrupt import graceful_interrupts
        from hvit_sweeps.sweep import close_study_run, connect, finalize, worker_plan
        from hvit_sweeps.sweep.background import start_background

        limit = parse_budget(budget) if budget is not None else None  # checked before anything is created
        sweep = opts.sweep(config_layer)
    gpus, per_gpu = _packing(sweep, devices.split(",") if devices else None, trials_per_gpu, workers=workers)
    plans = worker_plan(workers=workers, devices=gpus, trials_per_gpu=per_gpu)
    # Check the data before creating anything: a study is never bound to data it could not load.
    with saying(f"loading data: {sweep.base_config.data.dataset}"):
        splits = load_dataset(sweep.base_config.data, seed=sweep.base_config.seed)
    add = None if resume else (trials if trials is not None else sweep.spec.trials)
    with saying("opening the study and its MLflow runs"):
        connected = connect(sweep, add_trials=add, workers=len(plans))
        settle_budget(connected.study, limit)
    console.print(_sweep_banner(sweep, connected, len(plans)))
    if limit is not None:
        console.print(f"budget: {limit.describe()}, from now, across every worker of the study")
    names = [o.metric for o in sweep.spec.objectives]
    try:
        with (
            graceful_interrupts(console.print),
            SweepDashboard(study_name=sweep.study_name, target=connected.target, metric_names=names) as dash,
        ):
            _run_trials(sweep, connected, plans, splits, dash=dash, timeout=opts.timeout)
        finalize(sweep, connected, plots=False)  # it writes to both stores: a fault here is one line too
    except SweepFault as fault:  # a full disk, a database or server that stays away: one line, and how to go on
        close_study_run(sweep, connected, "FAILED")
        raise SweepFault(f"{fault}; then continue with: {_resume_command(sweep, opts.study)}") from None
    except KeyboardInterrupt:
        close_study_run(sweep, connected, "KILLED")
        console.print(
            "interrupted: finished trials are saved; the trial in progress is closed and queued to run again,"
            " with the same params, first on the next run."
        )
        console.print(f"continue with: {_resume_command(sweep, opts.study)}", soft_wrap=True)
        raise typer.Exit(130) from None
    except BaseException:
        close_study_run(sweep, connected, "FAILED")
        raise
    console.print(sweep_summary(connected.study, metric_names=names))
    if (line := budget_line(connected.study)) is not None:
        console.print(line)
    console.print(_tracking_hint(sweep, connected), soft_wrap=True)  # links must not be folded
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


@app.command()
@sweep_options
@config_flags(only=SWEEP_CONFIG_PATHS)
def worker(
    *,
    trials: Annotated[int | None, Opt(min=1, help="Stop this worker after this many trials.")] = None,
    worker_index: Annotated[
        int | None, Opt(min=0, help="This worker's number in its log lines; set by `run --workers`.")
    ] = None,
    opts: SweepOptions,
    config_layer: dict[str, Any],
) -> None:
    """Join a study and run its trials until its target is reached (one process of many)."""
    from hvit_sweeps.console import console
    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.interrupt import graceful_interrupts
    from hvit_sweeps.sweep import connect, finalize, run_worker

    sweep = opts.sweep(config_layer)
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
        raise typer.Exit(130) from None
    console.print(f"worker {index}: ran {summary.ran} trials, stopped: {summary.reason}")
    if worker_index is None:
        finalize(sweep, connected)  # a standalone worker may be the last one; runs started by `run` leave this to it


def _packing(
    sweep: Sweep, devices: list[str] | None, trials_per_gpu: str, *, workers: int | None
) -> tuple[list[str] | None, int]:
    """GPUs to pin workers to and trials per GPU; with `auto` on a CUDA host, every visible GPU is packed."""
    if trials_per_gpu != "auto":
        if not trials_per_gpu.isdigit() or int(trials_per_gpu) < 1:
            raise typer.BadParameter(f"{trials_per_gpu!r}: a positive number, or auto", param_hint="--trials-per-gpu")
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


def _resume_command(sweep: Sweep, study: str) -> str:
    """The exact `run --resume` line: every flag that names this study, its stores and its overrides.

    A store that came from the environment (HVIT_STORAGE, MLFLOW_TRACKING_URI) is
    not repeated: it will come from there again, and a password stays out of logs.
    """
    args = ["hvit-sweep", "run", "--study", study]
    if sweep.study_name != sweep.spec.name:
        args += ["--study-name", sweep.study_name]
    if sweep.root != Path("mlruns"):
        args += ["--root", str(sweep.root)]
    if sweep.storage_url and sweep.storage_url != os.environ.get("HVIT_STORAGE"):
        args += ["--storage", sweep.storage_url]
    if sweep.tracking_uri and sweep.tracking_uri != os.environ.get("MLFLOW_TRACKING_URI"):
        args += ["--tracking-uri", sweep.tracking_uri]
    args += override_args(sweep.cli, flag_paths=SWEEP_CONFIG_PATHS)
    return shlex.join([*args, "--resume"])


def _run_trials(
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
    args = _worker_args(sweep, timeout=timeout)
    codes = launch_workers(plans, worker_args=args, log_dir=log_dir, poll=lambda: dash.refresh(connected.study))
    if any(codes):
        console.print(f"[red]workers exited with {codes}[/red]: see {log_dir}/worker-*.log")


def _worker_args(sweep: Sweep, *, timeout: float | None) -> list[str]:
    """The flags that point a worker process at the same study, stores and overrides."""
    args = ["--study", str(sweep.spec_path), "--study-name", sweep.study_name, "--root", str(sweep.root)]
    args += ["--heartbeat", str(sweep.heartbeat)]
    if sweep.storage_url:
        args += ["--storage", sweep.storage_url]
    if sweep.tracking_uri:
        args += ["--tracking-uri", sweep.tracking_uri]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    return args + set_args(sweep.cli)


def _sweep_banner(sweep: Sweep, connected: Connected, workers: int) -> str:
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


def _tracking_hint(sweep: Sweep, connected: Connected) -> str:
    """Where to look: the trials, best first, and the study's run with its plots."""
    from hvit_sweeps.mlflow_view import view_key, view_url
    from hvit_sweeps.tracking import run_url

    local = sweep.tracker.local
    base = _ui_base(sweep.tracker.uri if not local else None)
    ui = ["hvit-sweep", "ui", *([] if sweep.root == Path("mlruns") else ["--root", str(sweep.root)])]
    return "\n".join(
        [
            *([f"MLflow: run `{shlex.join(ui)}`, then open"] if local else []),
            f"trials, best first: {view_url(base, connected.experiment_id, view_key(sweep.study_name))}",
            "study run (plots, best so far): "
            + run_url(base, connected.experiment_id, connected.parent_run_id, artifact=plot_artifact(PLOT_HISTORY)),
            "(MLflow shows accuracies as fractions: 0.42 there is 42.00% here)",
        ]
    )


def _ui_base(tracking_uri: str | None) -> str:
    """The MLflow UI's address: the tracking server's, or where `hvit-sweep ui` serves the embedded store."""
    return tracking_uri if tracking_uri and tracking_uri.startswith("http") else "http://127.0.0.1:5000"


def _trials_link(ref: StudyRef, loaded: optuna.Study) -> list[str]:
    """The line with the study's one trials link (its saved view), as `run` and `ui` print it."""
    from hvit_sweeps.mlflow_view import study_trials_url, view_key, view_url

    experiment = loaded.user_attrs.get(ATTR_EXPERIMENT)
    if not experiment:
        return []
    base = _ui_base(ref.tracking_uri)
    objective = f"{(loaded.metric_names or ['value'])[0]}:{loaded.directions[0].name.lower()}"
    url = view_url(base, experiment, view_key(loaded.study_name))  # the link the sweep wrote its view for
    if ref.tracking_uri is None and not (ref.root / TRACKING_DB).is_file():
        return [f"trials, best first: {url}"]  # reading a study must not create an embedded tracking store
    try:
        url = study_trials_url(ref.tracker(), base, experiment, loaded.study_name, objective)
    except Exception:  # noqa: BLE001 - a store that does not answer, or does not hold this study (another --root)
        pass
    return [f"trials, best first: {url}"]


def _run_links(trials: list[optuna.trial.FrozenTrial], *, experiment_id: str | None, base: str) -> list[str]:
    """One line per trial: its MLflow run page."""
    from hvit_sweeps.tracking import run_url

    lines = []
    for trial in trials:
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id and experiment_id:
            lines.append(f"trial {trial.number}: {run_url(base, experiment_id, run_id)}")
    return lines


@dataclass(frozen=True)
class StudyRef:
    """Where an existing study lives: the options `show`, `best` and `report` share."""

    study: str
    study_name: str | None
    storage: str | None
    tracking_uri: str | None
    root: Path

    def load(self) -> optuna.Study:
        """The study from its storage; an unknown name is one line that says how to create it."""
        import optuna

        from hvit_sweeps.study import load_study
        from hvit_sweeps.sweep import open_storage

        name = self.study_name
        if name is None:
            looks_like_file = self.study.endswith(".toml") or "/" in self.study
            name = load_study(self.study)[0].name if looks_like_file else self.study
        where = self.storage or f"{self.root}/{JOURNAL_FILE}"
        missing = HvitError(
            f"no study named {name!r} in {where}: run `{shlex.join(['hvit-sweep', 'run', '--study', name])}` first, "
            "or pass --storage"
        )
        journal = _journal_path(self.storage, self.root)
        if journal is not None and not journal.is_file():
            raise missing  # reading must not create an empty journal
        opened = open_storage(self.storage, root=self.root)
        try:
            return optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            raise missing from None

    def tracker(self) -> Tracker:
        """The study's MLflow store, checked to answer."""
        from hvit_sweeps.tracking import Tracker

        tracker = Tracker(self.tracking_uri, root=self.root)
        tracker.check_reachable()
        return tracker


def _journal_path(storage: str | None, root: Path) -> Path | None:
    """The journal file a storage URL names (none given: the embedded one); None for a database or Redis."""
    if storage is None:
        return root / JOURNAL_FILE
    return Path(storage.removeprefix("journal:")) if storage.startswith("journal:") else None


study_ref = option_group("ref", _LOCATION, StudyRef)


@app.command()
@study_ref
def show(*, ref: StudyRef) -> None:
    """List a study's trials: state, value, params, epochs and duration, and each trial's MLflow run."""
    from hvit_sweeps.budget import budget_line
    from hvit_sweeps.confirm import confirmation_table, stored_confirmation
    from hvit_sweeps.console import console, sweep_summary, trials_table

    loaded = ref.load()
    names = loaded.metric_names or [f"value {i}" for i in range(len(loaded.directions))]
    trials = loaded.get_trials(deepcopy=False)
    console.print(trials_table(trials, title=f"study {loaded.study_name}", metric_names=names))
    console.print(sweep_summary(loaded, metric_names=names))
    if (line := budget_line(loaded)) is not None:
        console.print(line)
    if (confirmed := stored_confirmation(loaded)) is not None:
        console.print(confirmation_table(confirmed))
    experiment = loaded.user_attrs.get(ATTR_EXPERIMENT)
    for line in [
        *_trials_link(ref, loaded),
        *_run_links(trials, experiment_id=experiment, base=_ui_base(ref.tracking_uri)),
    ]:
        console.print(line, soft_wrap=True)  # a link must not be folded


@app.command()
@study_ref
def best(
    *,
    export: Annotated[
        Path | None, Opt(help="Write checkpoint, config.json, metrics.json and MODEL_CARD.md here.")
    ] = None,
    top: Annotated[int, Opt(min=1, help="How many of the best trials (single objective).")] = 1,
    retrain: Annotated[
        bool,
        Opt(
            help="Train the best trial's config again on train+val, test it once, log and register it as the final model."
        ),
    ] = False,
    registry_name: Annotated[str | None, Opt(help="--retrain: registered model name (default: hvit-<study>).")] = None,
    alias: Annotated[str, Opt(help="--retrain: the alias moved to the new version.")] = "champion",
    seed: Annotated[int | None, Opt(min=0, help="--retrain: the final run's seed (default: the trial's + 1).")] = None,
    force: Annotated[bool, Opt(help="--export: replace the contents of a folder that is not empty.")] = False,
    confirm: Annotated[
        bool, Opt(help="Train the --top K trials again with --seeds N new seeds each, on val, and rank them.")
    ] = False,
    seeds: Annotated[int, Opt(min=2, help="--confirm: new seeds per trial.")] = 3,
    set_: SetOpt = None,
    ref: StudyRef,
) -> None:
    """Show the best trial (or the Pareto set); export it, or retrain it as the study's final model."""
    from hvit_sweeps.confirm import confirmation_table, stored_confirmation
    from hvit_sweeps.console import best_trials, console, trials_table

    if export is not None:
        from hvit_sweeps.export import check_export_dest

        check_export_dest(export, force=force)  # before the study is read or anything is trained
    loaded = ref.load()
    if confirm:
        _confirm(loaded, ref.tracker(), top=top, seeds=seeds, overrides=parse_sets(set_))
        return
    confirmed = stored_confirmation(loaded)
    if confirmed is not None and (retrain or export is not None):
        console.print(f"taking trial {confirmed.winner}, the seed-confirmed winner: {confirmed.statement}")
        _warn_if_unconfirmed(loaded, confirmed)
    if retrain:
        _retrain(
            loaded,
            ref.tracker(),
            export=export,
            force=force,
            registry_name=registry_name,
            alias=alias,
            seed=seed,
            overrides=parse_sets(set_),
            trial_number=confirmed.winner if confirmed else None,
        )
        return
    if export is not None:
        from hvit_sweeps.sweep.background import wait_for_background

        wait_for_background(ref.root, loaded.study_name)  # the visuals that `run` draws after its trials
    chosen = best_trials(loaded, top=top)
    if confirmed is not None:
        console.print(confirmation_table(confirmed))
        if export is not None:  # the export takes the confirmed winner, not the search's luckiest draw
            chosen = [t for t in loaded.get_trials(deepcopy=False) if t.number == confirmed.winner]
    if not chosen:
        raise HvitError(f"study {loaded.study_name!r} has no complete trial yet: run more trials first")
    names = loaded.metric_names or [f"value {i}" for i in range(len(loaded.directions))]
    title = "Pareto set" if len(loaded.directions) > 1 else f"best {len(chosen)} of study {loaded.study_name}"
    console.print(trials_table(chosen, title=title, metric_names=names))
    experiment = loaded.user_attrs.get(ATTR_EXPERIMENT)
    for line in _trials_link(ref, loaded):
        console.print(line, soft_wrap=True)
    for trial, line in zip(
        chosen, _run_links(chosen, experiment_id=experiment, base=_ui_base(ref.tracking_uri)), strict=False
    ):
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        console.print(f"{line}\n  checkpoint: runs:/{run_id}/{CHECKPOINT_ARTIFACT}", soft_wrap=True)
    if export is not None:
        from hvit_sweeps.export import export_trials  # torch: only to write a checkpoint

        for path in export_trials(loaded, chosen, tracker=ref.tracker(), dest=export, force=force):
            console.print(f"exported {path}")


def _retrain(
    loaded: optuna.Study,
    tracker: Tracker,
    *,
    export: Path | None,
    force: bool,
    registry_name: str | None,
    alias: str,
    seed: int | None,
    overrides: dict[str, Any],
    trial_number: int | None = None,
) -> None:
    from hvit_sweeps.console import TrainProgress, console
    from hvit_sweeps.interrupt import graceful_interrupts
    from hvit_sweeps.keys import ATTR_EPOCHS
    from hvit_sweeps.retrain import best_complete_trial, retrain_best

    source = best_complete_trial(loaded, number=trial_number)  # no complete trial: one line, exit 2
    epochs = int(source.user_attrs.get(ATTR_EPOCHS, 1))
    with graceful_interrupts(console.print), TrainProgress(epochs) as progress:
        result = retrain_best(
            loaded,
            tracker=tracker,
            dest=export,
            seed=seed,
            registry_name=registry_name,
            alias=alias,
            overrides=overrides,
            callbacks=[progress],
            force=force,
            trial_number=trial_number,
        )
    console.print(
        f"final model of trial {result.source_trial}: test top-1 {100 * result.test_acc1:.2f}% "
        f"(trained on train+val, {result.config.epochs} epochs, seed {result.config.seed}); MLflow run {result.run_id}"
    )
    if result.registered:
        console.print(f"registered {result.registered.uri} (version {result.registered.version})")
    if result.exported:
        console.print(f"exported {result.exported}")


def _warn_if_unconfirmed(loaded: optuna.Study, confirmed: Any) -> None:
    """A trial that beat the confirmed ones after the confirmation is not silently passed over."""
    from hvit_sweeps.console import best_trials, console

    leader = best_trials(loaded, top=1)
    if leader and leader[0].number not in {r.trial for r in confirmed.ranked}:
        console.print(
            f"[yellow]note:[/yellow] trial {leader[0].number}, now the best by its single run, was not in the "
            "confirmation: run `best --confirm` again to include it"
        )


def _confirm(loaded: optuna.Study, tracker: Tracker, *, top: int, seeds: int, overrides: dict[str, Any]) -> None:
    """`best --confirm`: replicates of the top trials, one after another, then the ranking and its statement."""
    from rich.progress import Progress

    from hvit_sweeps.confirm import candidates, confirm_top, confirmation_table
    from hvit_sweeps.console import console
    from hvit_sweeps.interrupt import graceful_interrupts

    candidates(loaded, top=top, seeds=seeds)  # a refusal is one line, before any progress or training
    with graceful_interrupts(console.print), Progress(console=console) as bar:
        task = bar.add_task("replicates", total=top * seeds)

        started: list[int] = []

        def progress(trial: int, seed: int) -> list[Any]:
            bar.update(task, completed=len(started))  # the replicates before this one are done
            started.append(trial)
            bar.console.print(f"replicate {len(started)} of {top * seeds}: trial {trial}, seed {seed}")
            return []

        confirmation = confirm_top(
            loaded, tracker=tracker, top=top, seeds=seeds, overrides=overrides, progress=progress
        )
        bar.update(task, completed=top * seeds)
    console.print(confirmation_table(confirmation))
    console.print(confirmation.statement)


@app.command()
@study_ref
def report(
    *,
    out: Annotated[Path | None, Opt(help="The HTML file to write (default: report-<study>.html).")] = None,
    top: Annotated[int, Opt(min=1, help="How many of the best trials to show.")] = 5,
    interactive: Annotated[
        bool | None,
        Opt(
            "--interactive/--png",
            help="Optuna plots as plotly (about 5 MB more: plotly.js inline) or PNG"
            " (default: plotly when it is installed).",
            show_default=False,
        ),
    ] = None,
    ref: StudyRef,
) -> None:
    """Write one self-contained HTML page for a study: summary, best trials, plots and visuals."""
    from hvit_sweeps.console import console
    from hvit_sweeps.report import build_report
    from hvit_sweeps.sweep.background import wait_for_background

    loaded = ref.load()
    wait_for_background(ref.root, loaded.study_name)  # the visuals and plots that `run` draws after its trials
    out = out or Path(f"report-{loaded.study_name}.html")
    path = build_report(loaded, tracker=ref.tracker(), out=out, top=top, interactive=interactive)
    console.print(f"report: {path}")


@app.command()
def studies() -> None:
    """List the study files in studies/ with their descriptions."""
    from rich.table import Table

    from hvit_sweeps.console import console
    from hvit_sweeps.study import find_study_files, load_study, studies_dir

    table = Table(title=f"studies in {studies_dir()}", title_justify="left")
    for column in ("name", "objective", "sampler / pruner", "trials x epochs", "description"):
        table.add_column(column)
    for path in find_study_files():
        try:
            spec, _ = load_study(path)
        except HvitError as err:
            table.add_row(path.stem, "[red]invalid[/red]", "", "", str(err))
            continue
        objectives = ", ".join(f"{o.direction[:3]} {o.metric}" for o in spec.objectives)
        table.add_row(
            spec.name,
            objectives,
            f"{spec.sampler.type} / {spec.pruner.type}",
            f"{spec.trials} x {spec.max_epochs}",
            spec.description,
        )
    console.print(table)


@app.command()
def ui(
    root: RootOpt = Path("mlruns"),
    port: Annotated[int, Opt(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the embedded store under --root; Ctrl-C stops it."""
    import contextlib
    import signal

    from hvit_sweeps.saying import saying

    # A shell starts a `&` job with SIGINT ignored, and Python keeps that: restore Ctrl-C / kill -INT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    waiting = contextlib.ExitStack()
    waiting.enter_context(saying(f"starting MLflow UI on http://127.0.0.1:{port} (about 15 s)"))
    from hvit_sweeps.console import console
    from hvit_sweeps.tracking import Tracker
    from hvit_sweeps.ui import LOG_FILE, serve_ui, study_links

    def ready(base: str) -> None:
        waiting.close()
        for name, trials, study_run in study_links(Tracker(None, root=root), base):
            console.print(
                f"{name}\n  trials, best first: {trials}\n  study run (plots, best so far): {study_run}", soft_wrap=True
            )
        console.print(f"MLflow UI at {base} (log: {root / LOG_FILE}); Ctrl-C stops it")

    with waiting:  # closed on ready, or on an error before it
        code = serve_ui(root, port, on_ready=ready)
    raise typer.Exit(code)
