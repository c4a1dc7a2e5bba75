"""Rich output: training progress as a callback, and results as tables.

Everything a person reads goes through here, so the commands stay thin and the
training loop never imports rich.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hvit_sweeps.checkpoint import Checkpoint
from hvit_sweeps.data import DatasetInfo
from hvit_sweeps.keys import ATTR_EPOCH, ATTR_EPOCHS, ATTR_SURPLUS
from hvit_sweeps.train import Callback, EpochReport, TrainResult

__all__ = [
    "SweepDashboard",
    "TrainProgress",
    "best_trials",
    "console",
    "dataset_line",
    "eval_table",
    "format_metric",
    "metrics_table",
    "sweep_summary",
    "train_result_table",
    "trials_table",
]

console = Console(highlight=False)


def format_metric(name: str, value: Any) -> str:
    """Accuracies as percentages, losses and rates with sensible digits."""
    if not isinstance(value, (int, float)):
        return str(value)
    if "acc" in name:
        return f"{100 * value:.2f}%"
    if name in ("lr",):
        return f"{value:.2e}"
    if name.endswith("per_second"):
        return f"{value:,.0f}"
    if name.endswith("_m"):
        return f"{value:.3f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def dataset_line(info: DatasetInfo, sizes: Mapping[str, int], fingerprint: str) -> str:
    """One line naming the data; synthetic data always says so."""
    counts = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
    style = "bold yellow" if info.synthetic else "bold"
    return (
        f"[{style}]dataset: {info.label}[/{style}]  {info.num_classes} classes, "
        f"{info.channels}x{info.image_size}x{info.image_size}, {counts}  (hash {fingerprint})"
    )


class TrainProgress(Callback):
    """Epoch and batch bars, plus one printed line per epoch."""

    def __init__(self, epochs: int, *, start_epoch: int = 1) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.epochs = self.progress.add_task("epochs", total=epochs, completed=start_epoch - 1)
        self.batches = self.progress.add_task("batches", total=None)

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        self.progress.update(self.batches, completed=batch, total=num_batches)

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.progress.update(self.epochs, completed=report.epoch)
        shown = ("train_loss", "val_loss", "val_acc1", "val_acc5", "lr", "images_per_second")
        parts = [f"{k} {format_metric(k, report.metrics[k])}" for k in shown]
        self.progress.console.print(f"epoch {report.epoch}/{report.epochs}  " + "  ".join(parts))
        return None


def metrics_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, format_metric(name, value))
    return table


def eval_table(checkpoint: Checkpoint, results: Mapping[str, Mapping[str, float]]) -> Table:
    """Each split's metrics beside what the checkpoint recorded for that split."""
    table = Table(title=f"{checkpoint.path} (epoch {checkpoint.epoch})", title_justify="left")
    for column in ("split", "metric", "now", "recorded"):
        table.add_column(column, justify="left" if column in ("split", "metric") else "right")
    for split, metrics in results.items():
        for name, value in metrics.items():
            recorded = checkpoint.metrics.get(f"{split}_{name}")
            shown = "" if recorded is None else format_metric(name, recorded)
            table.add_row(split, name, format_metric(name, value), shown)
    return table


def train_result_table(result: TrainResult) -> Table:
    rows: list[tuple[str, Any]] = [("status", f"{result.status}: {result.reason}")]
    rows.append(("best_epoch", result.best_epoch))
    rows += [(k, v) for k, v in result.best_metrics.items() if k != "epoch"]
    rows += list(result.test_metrics.items())
    rows += [(k, result.model_stats[k]) for k in ("params_m", "flops_m")]
    return metrics_table("Result (best epoch by validation)", rows)


# -- sweeps -----------------------------------------------------------------------------

_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}


def trial_values(trial: FrozenTrial, metric_names: list[str]) -> str:
    """The trial's objective values, or its last reported one (with the epoch) while it runs."""
    if not trial.values:
        last = max(trial.intermediate_values) if trial.intermediate_values else None
        if last is None:
            return ""
        return f"({format_metric(metric_names[0], trial.intermediate_values[last])} @ epoch {last})"
    return ", ".join(format_metric(name, v) for name, v in zip(metric_names, trial.values))


def short_params(params: Mapping[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.split('.', 1)[-1]}={shown}")
    return " ".join(parts)


def trials_table(trials: Iterable[FrozenTrial], *, title: str, metric_names: list[str]) -> Table:
    """One row per trial: number, state, value(s), params, epochs and duration."""
    table = Table(title=title, title_justify="left")
    for column in ("#", "state", " / ".join(metric_names), "epochs", "duration", "params"):
        table.add_column(column, justify="right" if column in ("#", "epochs", "duration") else "left")
    for trial in trials:
        state = trial.state.name
        duration = trial.duration.total_seconds() if trial.duration else None
        table.add_row(
            str(trial.number),
            f"[{_STATE_STYLE.get(state, '')}]{state}[/]",
            trial_values(trial, metric_names),
            str(len(trial.intermediate_values) or trial.user_attrs.get(ATTR_EPOCH, "")),
            "" if duration is None else f"{duration:.1f}s",
            short_params(trial.params),
        )
    return table


def best_trials(study: optuna.Study, *, top: int) -> list[FrozenTrial]:
    """The Pareto set for multi-objective studies, else the top trials by value."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.number)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(complete, key=lambda t: sign * t.values[0])[:top]


class _EpochRefresh(Callback):
    def __init__(self, dashboard: SweepDashboard, study: optuna.Study) -> None:
        self.dashboard, self.study = dashboard, study

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.dashboard.refresh(self.study)
        return None


class SweepDashboard:
    """Live view of a study, read from its storage: trial bar, running trials, best so far."""

    def __init__(self, *, study_name: str, target: int, metric_names: list[str], top: int = 5) -> None:
        self.study_name, self.target, self.metric_names, self.top = study_name, target, metric_names, top
        self.live = Live(console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> SweepDashboard:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        console.print()

    def refresh(self, study: optuna.Study) -> None:
        self.live.update(self.render(study), refresh=True)

    def trial_callback(self, study: optuna.Study, trial_number: int) -> Callback:
        return _EpochRefresh(self, study)

    def render(self, study: optuna.Study) -> Group:
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        header = Table.grid(padding=(0, 2))
        header.add_row(
            f"[bold]study {self.study_name}[/bold]",
            ProgressBar(total=max(self.target, 1), completed=min(len(finished), self.target), width=30),
            f"{len(finished)}/{self.target} trials",
            f"[green]{counts[TrialState.COMPLETE]} complete[/]  [yellow]{counts[TrialState.PRUNED]} pruned[/]  "
            f"[red]{counts[TrialState.FAIL]} failed[/]",
        )
        running = Table(title="running", title_justify="left", show_edge=False)
        for column in ("#", "epoch", "", "last value", "params"):
            running.add_column(column)
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                epoch, epochs = trial.user_attrs.get(ATTR_EPOCH, 0), trial.user_attrs.get(ATTR_EPOCHS, 1)
                running.add_row(
                    str(trial.number), f"{epoch}/{epochs}", ProgressBar(total=epochs, completed=epoch, width=20),
                    trial_values(trial, self.metric_names), short_params(trial.params),
                )
        best = trials_table(
            best_trials(study, top=self.top), title="best so far", metric_names=self.metric_names
        ) if counts[TrialState.COMPLETE] else Text("no complete trial yet", style="dim")
        return Group(header, running, best)


def sweep_summary(study: optuna.Study, *, metric_names: list[str]) -> Table:
    """Counts by state, then the best value(s) and params."""
    trials = study.get_trials(deepcopy=False)
    surplus = sum(bool(t.user_attrs.get(ATTR_SURPLUS)) for t in trials)
    table = Table(title=f"study {study.study_name}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
        count = sum(t.state == state for t in trials)
        extra = f" ({surplus} surplus, never trained)" if state == TrialState.FAIL and surplus else ""
        table.add_row(state.name.lower(), f"{count}{extra}")
    chosen = best_trials(study, top=1)
    if not chosen:
        table.add_row("best", "no complete trial yet")
    elif len(study.directions) > 1:
        table.add_row("pareto set", ", ".join(f"#{t.number} ({trial_values(t, metric_names)})" for t in chosen))
    else:
        table.add_row(f"best {metric_names[0]}", f"{format_metric(metric_names[0], chosen[0].value)} (trial {chosen[0].number})")
        table.add_row("best params", short_params(chosen[0].params))
    return table
