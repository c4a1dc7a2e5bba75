"""The ``hvit-sweep`` command line.

Each command parses its flags, calls one function of :mod:`hvit_sweeps.app` and
prints what it returns. Flags default to None, meaning "not given", so only what
the user typed overrides the layer below it (defaults, a study file, or a
checkpoint's saved config). Every flag is checked before torch loads, and any
:class:`~hvit_sweeps.errors.HvitError` or bad flag value ends as one ``error:``
line on stderr with exit code 2.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from hvit_sweeps import flags
from hvit_sweeps.app.best import BestRequest
from hvit_sweeps.app.options import DEFAULT_ROOT, SWEEP_CONFIG_PATHS, SWEEP_FLAGS, StudyRef, SweepOptions
from hvit_sweeps.app.sweeps import RunRequest
from hvit_sweeps.errors import HvitError
from hvit_sweeps.flags import config_flags, keyword, option_group
from hvit_sweeps.keys import LOCAL_UI_PORT

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


def _exit(code: int) -> None:
    """A command's exit code: 1 for a diverged run, 130 when interrupted."""
    if code:
        raise typer.Exit(code)


def _show(*items: Any) -> None:
    """Tables as tables; a line is never folded, so a link or a command stays whole."""
    from hvit_sweeps.console import console

    for item in items:
        console.print(item, soft_wrap=isinstance(item, str))


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
        Path | None,
        Opt(callback=flags.check_checkpoint, help="Continue the run this checkpoint saved (all its state)."),
    ] = None,
) -> None:
    """Train one HViT and keep its best-by-validation checkpoint."""
    from hvit_sweeps.app import training

    _exit(training.train(config_layer, set_, resume=resume))


@app.command("eval")
@config_flags(only=("data.data_dir", "data.download", "data.batch_size", "runtime.device"))
def evaluate_checkpoint(
    *,
    checkpoint: Annotated[
        Path, Opt(callback=flags.check_checkpoint, help="A .pth file from `train` or `best --export`.")
    ],
    split: Annotated[str, Opt(help="Which split: val, test or both.", callback=flags.check_split)] = "both",
    visuals: Annotated[Path | None, Opt(help="Also write the visuals (confusion matrix, mistakes, ...) here.")] = None,
    config_layer: dict[str, Any],
) -> None:
    """Evaluate a checkpoint on the validation split it was chosen on, and on test."""
    from hvit_sweeps.app import training

    splits = ("val", "test") if split == "both" else (split,)
    training.evaluate(checkpoint, splits=splits, visuals=visuals, config_layer=config_layer)


# -- sweeps -----------------------------------------------------------------------------


def _opt(name: str, kind: Any, default: Any, help: str, **kwargs: Any) -> inspect.Parameter:
    """One option of a group; a row of SWEEP_FLAGS gives its flag and environment variable."""
    row = SWEEP_FLAGS.get(name)
    decls = (row.flag,) if row else ()
    option = Opt(*decls, envvar=row.envvar if row else None, help=help, **kwargs)
    return keyword(name, Annotated[kind, option], default)


_LOCATION = [
    _opt("study", str, inspect.Parameter.empty, "A study name from studies/ or a path to a .toml file."),
    _opt("study_name", str | None, None, "Name in the storage (default: the study file's name).",
         callback=flags.check_study_name),
    _opt("storage", str | None, None, "Optuna storage: postgresql://..., sqlite:///x.db, journal:PATH, redis://... "
         "(default: a journal file under --root)."),
    _opt("tracking_uri", str | None, None,
         "MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: SQLite under --root)."),
    _opt("root", Path, DEFAULT_ROOT, "Folder of the embedded storage, tracking and artifacts."),
]  # fmt: skip
sweep_options = option_group("opts", [
    *_LOCATION,
    keyword("set_", SetOpt, None),
    _opt("heartbeat", int, 60, "Seconds between RDB heartbeats; a trial silent for 3 of them is retried.", min=1),
    _opt("timeout", float | None, None, "Stop starting new trials after this many seconds."),
], lambda set_, **values: SweepOptions(sets=set_, **values))  # fmt: skip
study_ref = option_group("ref", _LOCATION, StudyRef)
run_request = option_group("request", [
    _opt("trials", int | None, None, "Trials to add (default: the study file's trials).", min=1),
    _opt("workers", int | None, None, "Worker processes on this machine (default: 1, in this process).", min=1),
    _opt("devices", str | None, None, "GPUs to pin workers to, round-robin, e.g. 0,1,2,3.",
         callback=flags.check_devices),
    _opt("trials_per_gpu", str, "auto", "Concurrent trials per GPU: a number, or auto (from the largest model's "
         "memory and the card; 1 without CUDA).", callback=flags.check_trials_per_gpu),
    _opt("resume", bool, False, "Add no trials: fail dead workers' trials, retry them, and finish the target."),
    _opt("budget", str | None, None, "Stop starting trials after this much wall time (2h, 90m) or device time "
         "(10gpu-h), all workers."),
], RunRequest)  # fmt: skip


@app.command()
@sweep_options
@config_flags(only=SWEEP_CONFIG_PATHS)
@run_request
def run(*, request: RunRequest, opts: SweepOptions, config_layer: dict[str, Any]) -> None:
    """Run (or extend) an Optuna study; each trial is logged as a nested MLflow run."""
    from hvit_sweeps.app.sweeps import run_study

    _exit(run_study(opts, config_layer, request))


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
    from hvit_sweeps.app.sweeps import run_worker_process

    _exit(run_worker_process(opts, config_layer, trials=trials, worker_index=worker_index))


# -- reading a study --------------------------------------------------------------------


@app.command()
@study_ref
def show(*, ref: StudyRef) -> None:
    """List a study's trials: state, value, params, epochs and duration, and each trial's MLflow run."""
    from hvit_sweeps.app.reading import show as study_view

    _show(*study_view(ref))


best_request = option_group("request", [
    _opt("export", Path | None, None, "Write checkpoint, config.json, metrics.json and MODEL_CARD.md here."),
    _opt("top", int, 1, "How many of the best trials (single objective).", min=1),
    _opt("retrain", bool, False, "Train the best trial's config again on train+val, test it once, log and register "
         "it as the final model."),
    _opt("registry_name", str | None, None, "--retrain: registered model name (default: hvit-<study>)."),
    _opt("alias", str, "champion", "--retrain: the alias moved to the new version."),
    _opt("seed", int | None, None, "--retrain: the final run's seed (default: the trial's + 1).", min=0),
    _opt("force", bool, False, "--export: replace the contents of a folder that is not empty."),
    _opt("confirm", bool, False, "Train the --top K trials again with --seeds N new seeds each, on val, "
         "and rank them."),
    _opt("seeds", int, 3, "--confirm: new seeds per trial.", min=2),
    keyword("set_", SetOpt, None),
], lambda set_, **values: BestRequest(sets=set_, **values))  # fmt: skip


@app.command()
@study_ref
@best_request
def best(*, request: BestRequest, ref: StudyRef) -> None:
    """Show the best trial (or the Pareto set); export it, or retrain it as the study's final model."""
    from hvit_sweeps.app.best import best as best_of

    best_of(ref, request)


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
    from hvit_sweeps.app.reading import report as write_report

    _show(f"report: {write_report(ref, out=out, top=top, interactive=interactive)}")


@app.command()
def studies() -> None:
    """List the study files in studies/ with their descriptions."""
    from hvit_sweeps.app.reading import studies_table

    _show(studies_table())


@app.command()
def ui(
    root: Annotated[
        Path, Opt(envvar="HVIT_ROOT", help="Folder of the embedded storage, tracking and artifacts.")
    ] = DEFAULT_ROOT,
    port: Annotated[int, Opt(help="Port on 127.0.0.1.")] = LOCAL_UI_PORT,
) -> None:
    """Open the MLflow UI on the embedded store under --root; Ctrl-C stops it."""
    from hvit_sweeps.app.reading import open_ui

    _exit(open_ui(root, port, show_line=_show))
