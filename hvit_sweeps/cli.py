"""The ``hvit-sweep`` command line.

Commands are thin: each turns its flags into config layers or keyword arguments
and calls one function. Flags default to None, meaning "not given", so only what
the user typed overrides the layer below it (defaults, a study file, or a
checkpoint's saved config). Any :class:`~hvit_sweeps.errors.HvitError` or bad
flag value ends as one ``error:`` line on stderr with exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from hvit_sweeps.errors import HvitError

__all__ = ["app", "main"]


# Recent typer vendors click as typer._click; older ones use click itself. Catch both.
_click_modules = {click, getattr(typer, "_click", click)}
_USAGE_ERRORS = tuple(m.exceptions.UsageError for m in _click_modules)
_ABORTS = (click.Abort, typer.Abort)


class _OneLineErrors(TyperGroup):
    """Turns usage errors and HvitError into one line and exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except _USAGE_ERRORS as err:
            hint = f" (see `hvit-sweep {err.ctx.info_name} --help`)" if err.ctx else ""
            _fail(f"{err.format_message()}{hint}" if err.ctx and err.ctx.parent else err.format_message())
        except HvitError as err:
            _fail(str(err))
        except _ABORTS:
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Optuna sweeps of a hierarchical Vision Transformer, tracked in MLflow.",
)


def main() -> None:
    app()


def _int_tuple(value: Optional[str]) -> Optional[tuple[int, ...]]:
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 64,128,256") from None


def _help(path: str) -> str:
    from hvit_sweeps.config import field_help

    return field_help(path)


# Flag name -> config path. One table, read by `train` and by `run`/`worker`.
TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "download": "data.download",
    "val_split": "data.val_split",
    "batch_size": "data.batch_size",
    "num_workers": "data.num_workers",
    "loader": "data.loader",
    "augment": "data.augment",
    "mixup": "data.mixup_alpha",
    "cutmix": "data.cutmix_alpha",
    "max_train_samples": "data.max_train_samples",
    "max_eval_samples": "data.max_eval_samples",
    "epochs": "epochs",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "warmup_epochs": "optim.warmup_epochs",
    "label_smoothing": "optim.label_smoothing",
    "grad_clip": "optim.grad_clip",
    "embed_dims": "model.embed_dims",
    "depths": "model.depths",
    "num_heads": "model.num_heads",
    "patch_size": "model.patch_size",
    "mlp_ratio": "model.mlp_ratio",
    "drop_path": "model.drop_path_rate",
    "dropout": "model.dropout",
    "device": "runtime.device",
    "amp": "runtime.amp",
    "autocast_dtype": "runtime.autocast_dtype",
    "compile": "runtime.compile",
    "cuda_graphs": "runtime.cuda_graphs",
    "channels_last": "runtime.channels_last",
    "seed": "seed",
    "monitor": "monitor",
    "checkpoint_path": "checkpoint_path",
    "save_final": "save_final",
    "evaluate_test": "evaluate_test",
}


def flag_layer(values: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave, keyed by config path."""
    return {TRAIN_FLAGS[name]: value for name, value in values.items() if name in TRAIN_FLAGS and value is not None}


Opt = typer.Option


@app.command()
def train(
    dataset: Annotated[Optional[str], Opt(help=_help("data.dataset"))] = None,
    data_dir: Annotated[Optional[Path], Opt(help=_help("data.data_dir"))] = None,
    download: Annotated[Optional[bool], Opt("--download/--no-download", help=_help("data.download"))] = None,
    val_split: Annotated[Optional[float], Opt(help=_help("data.val_split"))] = None,
    batch_size: Annotated[Optional[int], Opt(help=_help("data.batch_size"))] = None,
    num_workers: Annotated[Optional[int], Opt(help=_help("data.num_workers"))] = None,
    loader: Annotated[Optional[str], Opt(help=_help("data.loader"))] = None,
    augment: Annotated[Optional[str], Opt(help=_help("data.augment"))] = None,
    mixup: Annotated[Optional[float], Opt(help=_help("data.mixup_alpha"))] = None,
    cutmix: Annotated[Optional[float], Opt(help=_help("data.cutmix_alpha"))] = None,
    max_train_samples: Annotated[Optional[int], Opt(help=_help("data.max_train_samples"))] = None,
    max_eval_samples: Annotated[Optional[int], Opt(help=_help("data.max_eval_samples"))] = None,
    epochs: Annotated[Optional[int], Opt(help=_help("epochs"))] = None,
    lr: Annotated[Optional[float], Opt(help=_help("optim.lr"))] = None,
    weight_decay: Annotated[Optional[float], Opt(help=_help("optim.weight_decay"))] = None,
    warmup_epochs: Annotated[Optional[float], Opt(help=_help("optim.warmup_epochs"))] = None,
    label_smoothing: Annotated[Optional[float], Opt(help=_help("optim.label_smoothing"))] = None,
    grad_clip: Annotated[Optional[float], Opt(help=_help("optim.grad_clip"))] = None,
    embed_dims: Annotated[Optional[str], Opt(help=_help("model.embed_dims"), callback=_int_tuple)] = None,
    depths: Annotated[Optional[str], Opt(help=_help("model.depths"), callback=_int_tuple)] = None,
    num_heads: Annotated[Optional[str], Opt(help=_help("model.num_heads"), callback=_int_tuple)] = None,
    patch_size: Annotated[Optional[int], Opt(help=_help("model.patch_size"))] = None,
    mlp_ratio: Annotated[Optional[float], Opt(help=_help("model.mlp_ratio"))] = None,
    drop_path: Annotated[Optional[float], Opt(help=_help("model.drop_path_rate"))] = None,
    dropout: Annotated[Optional[float], Opt(help=_help("model.dropout"))] = None,
    device: Annotated[Optional[str], Opt(help=_help("runtime.device"))] = None,
    amp: Annotated[Optional[bool], Opt("--amp/--no-amp", help=_help("runtime.amp"))] = None,
    autocast_dtype: Annotated[Optional[str], Opt(help=_help("runtime.autocast_dtype"))] = None,
    compile: Annotated[Optional[str], Opt(help=_help("runtime.compile"))] = None,
    cuda_graphs: Annotated[Optional[bool], Opt("--cuda-graphs/--no-cuda-graphs", help=_help("runtime.cuda_graphs"))] = None,
    channels_last: Annotated[Optional[bool], Opt("--channels-last/--no-channels-last", help=_help("runtime.channels_last"))] = None,
    seed: Annotated[Optional[int], Opt(help=_help("seed"))] = None,
    monitor: Annotated[Optional[str], Opt(help=_help("monitor"))] = None,
    checkpoint_path: Annotated[Optional[Path], Opt(help=_help("checkpoint_path"))] = None,
    save_final: Annotated[Optional[bool], Opt("--save-final/--no-save-final", help=_help("save_final"))] = None,
    evaluate_test: Annotated[Optional[bool], Opt("--evaluate-test/--no-evaluate-test", help=_help("evaluate_test"))] = None,
    resume: Annotated[Optional[Path], Opt(help="Continue a checkpoint's run: its config, weights, optimizer and schedule.")] = None,
) -> None:
    """Train one HViT and keep its best-by-validation checkpoint."""
    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.config import build_config
    from hvit_sweeps.console import TrainProgress, console, dataset_line, train_result_table
    from hvit_sweeps.train import train as run_training

    flags = flag_layer(locals())
    checkpoint = load_checkpoint(resume) if resume is not None else None
    base = checkpoint.config.model_dump(mode="json") if checkpoint else {}
    config = build_config(base, flags, source="train flags")
    start = checkpoint.epoch + 1 if checkpoint else 1
    with TrainProgress(config.epochs, start_epoch=start) as progress:
        result = run_training(config, callbacks=[progress], resume=checkpoint)
    console.print(dataset_line(result.dataset, result.dataset_sizes, result.dataset_fingerprint))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(train_result_table(result))
    if config.checkpoint_path is not None and result.best_epoch:
        console.print(f"best checkpoint: {config.checkpoint_path}")
    if result.status == "diverged":
        raise typer.Exit(1)


@app.command("eval")
def evaluate_checkpoint(
    checkpoint: Annotated[Path, Opt(help="A .pth file from `train` or `best --export`.")],
    data_dir: Annotated[Optional[Path], Opt(help=_help("data.data_dir"))] = None,
    download: Annotated[Optional[bool], Opt("--download/--no-download", help=_help("data.download"))] = None,
    batch_size: Annotated[Optional[int], Opt(help=_help("data.batch_size"))] = None,
    device: Annotated[Optional[str], Opt(help=_help("runtime.device"))] = None,
    split: Annotated[str, Opt(help="Which split: val, test or both.")] = "both",
) -> None:
    """Evaluate a checkpoint on the validation split it was chosen on, and on test."""
    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.console import console, dataset_line, eval_table
    from hvit_sweeps.train import evaluate_checkpoint as run_eval

    if split not in ("val", "test", "both"):
        raise typer.BadParameter(f"{split!r}: use val, test or both", param_hint="--split")
    saved = load_checkpoint(checkpoint)
    overrides = flag_layer({"data_dir": data_dir, "download": download, "batch_size": batch_size, "device": device})
    results, data = run_eval(saved, overrides=overrides, splits=("val", "test") if split == "both" else (split,))
    console.print(dataset_line(data.info, data.sizes, data.fingerprint))
    console.print(eval_table(saved, results))


# -- sweeps -----------------------------------------------------------------------------

StudyOpt = Annotated[str, Opt("--study", help="A study name from studies/ or a path to a .toml file.")]
StudyNameOpt = Annotated[Optional[str], Opt(help="Name in the storage [default: the study file's name].")]
StorageOpt = Annotated[
    Optional[str],
    Opt(envvar="HVIT_STORAGE", help="Optuna storage: postgresql://..., sqlite:///x.db, journal:PATH, redis://... [default: journal file under --root]"),
]
TrackingOpt = Annotated[
    Optional[str],
    Opt(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 [default: SQLite under --root]"),
]
RootOpt = Annotated[Path, Opt(envvar="HVIT_ROOT", help="Folder of the embedded storage, tracking and artifacts.")]
DatasetOpt = Annotated[Optional[str], Opt(help=_help("data.dataset"))]
DataDirOpt = Annotated[Optional[Path], Opt(help=_help("data.data_dir"))]
DeviceOpt = Annotated[Optional[str], Opt(help=_help("runtime.device"))]
SeedOpt = Annotated[Optional[int], Opt(help=_help("seed"))]
SetOpt = Annotated[
    Optional[list[str]],
    Opt("--set", help="Override any config path for every trial, e.g. --set runtime.cuda_graphs=true (repeatable)."),
]
TimeoutOpt = Annotated[Optional[float], Opt(help="Stop starting new trials after this many seconds.")]
HeartbeatOpt = Annotated[int, Opt(min=1, help="Seconds between RDB heartbeats; a trial silent for 3 of them is retried.")]


def _parse_sets(items: Optional[list[str]]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as TOML (true, 3, 1e-3, [64, 128]) or else kept as text."""
    import tomllib

    from hvit_sweeps.config import has_field

    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not has_field(key.strip()):
            raise typer.BadParameter(f"{item!r}: use PATH=VALUE with a config path such as optim.lr=1e-3", param_hint="--set")
        try:
            parsed[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            parsed[key.strip()] = raw
    return parsed


def _make_sweep(
    study: str,
    study_name: Optional[str],
    storage: Optional[str],
    tracking_uri: Optional[str],
    root: Path,
    flags: dict[str, Any],
    heartbeat: int,
) -> Any:
    from hvit_sweeps.study import load_study
    from hvit_sweeps.sweep import Sweep

    cli = {**flag_layer(flags), **flags.get("set", {})}
    spec, path = load_study(study, cli=cli)
    return Sweep(
        spec=spec,
        spec_path=path.resolve(),
        study_name=study_name or spec.name,
        storage_url=storage,
        tracking_uri=tracking_uri,
        root=root,
        cli=cli,
        heartbeat=heartbeat,
    )


@app.command()
def run(
    study: StudyOpt,
    trials: Annotated[Optional[int], Opt(min=0, help="Trials to add [default: the study file's trials].")] = None,
    timeout: TimeoutOpt = None,
    study_name: StudyNameOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    workers: Annotated[Optional[int], Opt(min=1, help="Worker processes on this machine [default: 1, in this process].")] = None,
    devices: Annotated[Optional[str], Opt(help="GPUs to pin workers to, round-robin, e.g. 0,1,2,3.")] = None,
    trials_per_gpu: Annotated[int, Opt(min=1, help="Concurrent trials (worker processes) per GPU in --devices.")] = 1,
    resume: Annotated[bool, Opt(help="Add no trials: fail dead workers' trials, retry them, and finish the target.")] = False,
    root: RootOpt = Path("mlruns"),
    heartbeat: HeartbeatOpt = 60,
) -> None:
    """Run (or extend) an Optuna study; each trial is logged as a nested MLflow run."""
    from hvit_sweeps.console import SweepDashboard, console, sweep_summary
    from hvit_sweeps.sweep import connect, finalize, launch_workers, run_worker, worker_plan

    flags = {"dataset": dataset, "data_dir": data_dir, "device": device, "seed": seed, "set": _parse_sets(set_)}
    sweep = _make_sweep(study, study_name, storage, tracking_uri, root, flags, heartbeat)
    plans = worker_plan(
        workers=workers, devices=devices.split(",") if devices else None, trials_per_gpu=trials_per_gpu
    )
    add = None if resume else (trials if trials is not None else sweep.spec.trials)
    connected = connect(sweep, add_trials=add, workers=len(plans))
    console.print(_sweep_banner(sweep, connected, len(plans)))
    names = [o.metric for o in sweep.spec.objectives]
    try:
        with SweepDashboard(study_name=sweep.study_name, target=connected.target, metric_names=names) as dash:
            dash.refresh(connected.study)
            if len(plans) == 1 and not plans[0]:
                run_worker(sweep, connected, timeout=timeout, display=dash)
            else:
                args = _worker_args(sweep, flags, timeout=timeout)
                log_dir = root / "logs" / sweep.study_name
                codes = launch_workers(plans, worker_args=args, log_dir=log_dir, poll=lambda: dash.refresh(connected.study))
                if any(codes):
                    console.print(f"[red]workers exited with {codes}[/red]: see {log_dir}/worker-*.log")
    except KeyboardInterrupt:
        console.print(f"interrupted: trial states are saved; continue with `hvit-sweep run --study {study} --resume`")
        raise typer.Exit(130) from None
    finalize(sweep, connected)
    console.print(sweep_summary(connected.study, metric_names=names))
    console.print(_tracking_hint(sweep, connected), soft_wrap=True)  # links must not be folded


@app.command()
def worker(
    study: StudyOpt,
    trials: Annotated[Optional[int], Opt(min=1, help="Stop this worker after this many trials.")] = None,
    timeout: TimeoutOpt = None,
    study_name: StudyNameOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    worker_index: Annotated[Optional[int], Opt(min=0, help="Offsets the sampler seed; set by `run --workers`.")] = None,
    root: RootOpt = Path("mlruns"),
    heartbeat: HeartbeatOpt = 60,
) -> None:
    """Join a study and run its trials until its target is reached (one process of many)."""
    from hvit_sweeps.console import console
    from hvit_sweeps.sweep import connect, finalize, run_worker

    flags = {"dataset": dataset, "data_dir": data_dir, "device": device, "seed": seed, "set": _parse_sets(set_)}
    sweep = _make_sweep(study, study_name, storage, tracking_uri, root, flags, heartbeat)
    # A worker started by hand or by compose gets a seed offset from its pid.
    index = worker_index if worker_index is not None else os.getpid() % 100_000
    connected = connect(sweep, worker_index=index, workers=2)
    console.print(f"worker {index} on study {sweep.study_name}: target {connected.target} trials")
    try:
        summary = run_worker(sweep, connected, max_trials=trials, timeout=timeout)
    except KeyboardInterrupt:
        console.print("interrupted: the current trial was closed; start the worker again to continue")
        raise typer.Exit(130) from None
    console.print(f"worker {index}: ran {summary.ran} trials, stopped: {summary.reason}")
    if worker_index is None:
        finalize(sweep, connected)  # a standalone worker may be the last one; runs started by `run` leave this to it


def _worker_args(sweep: Any, flags: dict[str, Any], *, timeout: Optional[float]) -> list[str]:
    args = ["--study", str(sweep.spec_path), "--study-name", sweep.study_name, "--root", str(sweep.root)]
    args += ["--heartbeat", str(sweep.heartbeat)]
    if sweep.storage_url:
        args += ["--storage", sweep.storage_url]
    if sweep.tracking_uri:
        args += ["--tracking-uri", sweep.tracking_uri]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    for name, value in flags.items():
        if name == "set":
            args += [arg for key, v in value.items() for arg in ("--set", f"{key}={_toml_value(v)}")]
        elif value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _toml_value(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _sweep_banner(sweep: Any, connected: Any, workers: int) -> str:
    from hvit_sweeps.data import describe_dataset
    from hvit_sweeps.train import resolve_device, runtime_notes

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


def _tracking_hint(sweep: Any, connected: Any) -> str:
    """Where to look: the trials, best first, and the study's run with its plots."""
    from hvit_sweeps.tracking import run_url

    first = sweep.spec.objectives[0]
    local = sweep.tracker.local
    base = "http://127.0.0.1:5000" if local else sweep.tracker.uri
    root = "" if sweep.root == Path("mlruns") else f" --root {sweep.root}"
    return "\n".join(
        [
            *([f"MLflow: run `hvit-sweep ui{root}`, then open"] if local else []),
            f"trials, best first: {_trials_url(base, connected.experiment_id, f'{first.metric}:{first.direction}')}",
            "study run (plots, best so far): "
            + run_url(base, connected.experiment_id, connected.parent_run_id, artifact="plots/optimization_history.png"),
        ]
    )


def _trials_url(base: str, experiment_id: str, objective: str) -> str:
    """``objective`` as the parent run records it: "val_acc1:maximize"."""
    from hvit_sweeps.study import tracked_metric
    from hvit_sweeps.tracking import runs_table_url

    metric, _, direction = objective.partition(":")
    if not metric:
        return runs_table_url(base, experiment_id)
    return runs_table_url(base, experiment_id, order_by=tracked_metric(metric), ascending=direction == "minimize")


def _load_existing(study: str, study_name: Optional[str], storage: Optional[str], root: Path) -> Any:
    import optuna

    from hvit_sweeps.study import load_study
    from hvit_sweeps.sweep import open_storage

    if study_name is None:
        looks_like_file = study.endswith(".toml") or "/" in study
        study_name = load_study(study)[0].name if looks_like_file else study
    opened = open_storage(storage, root=root)
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        where = storage or f"{root}/optuna.journal"
        raise HvitError(
            f"no study named {study_name!r} in {where}: run `hvit-sweep run --study {study_name}` first, or pass --storage"
        ) from None


@app.command()
def show(
    study: StudyOpt,
    study_name: StudyNameOpt = None,
    storage: StorageOpt = None,
    root: RootOpt = Path("mlruns"),
) -> None:
    """List a study's trials: state, value, params, epochs and duration."""
    from hvit_sweeps.console import console, sweep_summary, trials_table

    loaded = _load_existing(study, study_name, storage, root)
    names = loaded.metric_names or [f"value {i}" for i in range(len(loaded.directions))]
    console.print(trials_table(loaded.get_trials(deepcopy=False), title=f"study {loaded.study_name}", metric_names=names))
    console.print(sweep_summary(loaded, metric_names=names))


@app.command()
def best(
    study: StudyOpt,
    export: Annotated[Optional[Path], Opt(help="Write checkpoint, config.json, metrics.json and MODEL_CARD.md here.")] = None,
    top: Annotated[int, Opt(min=1, help="How many of the best trials (single objective).")] = 1,
    study_name: StudyNameOpt = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    root: RootOpt = Path("mlruns"),
) -> None:
    """Show the best trial (or the Pareto set) and optionally export its checkpoint."""
    from hvit_sweeps.console import best_trials, console, trials_table
    from hvit_sweeps.export import export_trials
    from hvit_sweeps.tracking import Tracker

    loaded = _load_existing(study, study_name, storage, root)
    chosen = best_trials(loaded, top=top)
    if not chosen:
        raise HvitError(f"study {loaded.study_name!r} has no complete trial yet: run more trials first")
    names = loaded.metric_names or [f"value {i}" for i in range(len(loaded.directions))]
    title = "Pareto set" if len(loaded.directions) > 1 else f"best {len(chosen)} of study {loaded.study_name}"
    console.print(trials_table(chosen, title=title, metric_names=names))
    if export is not None:
        tracker = Tracker(tracking_uri, root=root)
        tracker.check_reachable()
        for path in export_trials(loaded, chosen, tracker=tracker, dest=export):
            console.print(f"exported {path}")


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
            spec.name, objectives, f"{spec.sampler.type} / {spec.pruner.type}",
            f"{spec.trials} x {spec.max_epochs}", spec.description,
        )
    console.print(table)


@app.command()
def ui(
    root: RootOpt = Path("mlruns"),
    port: Annotated[int, Opt(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on the embedded store under --root."""
    from hvit_sweeps.console import console
    from hvit_sweeps.tracking import Tracker

    if not (root / "mlflow.db").is_file():
        raise HvitError(f"no tracking store at {root}/mlflow.db: run a study first, or pass --root")
    tracker = Tracker(None, root=root)
    base = f"http://127.0.0.1:{port}"
    for experiment in tracker.client.search_experiments():
        for study in tracker.study_runs(experiment.experiment_id):
            objective = study.data.params.get("study.objectives", "").split(",")[0]
            link = _trials_url(base, experiment.experiment_id, objective)
            console.print(f"{study.data.tags['hvit.study']}: {link}", soft_wrap=True)  # a link must not be folded
    # This interpreter's mlflow, whether or not its venv is on PATH.
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracker.uri,
               "--host", "127.0.0.1", "--port", str(port)]
    os.execv(command[0], command)
