"""Rich output: training progress as a callback, and results as tables.

Everything a person reads goes through here, so the commands stay thin and the
training loop never imports rich.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hvit_sweeps.callbacks import Callback, EpochReport, RunPlan, TrainResult
from hvit_sweeps.cost import format_cost
from hvit_sweeps.data.info import DatasetInfo
from hvit_sweeps.keys import ATTR_COST, ATTR_EPOCH, ATTR_EPOCHS, ATTR_SURPLUS
from hvit_sweeps.metrics import format_metric
from hvit_sweeps.sweep.record import StudyRecord
from hvit_sweeps.sweep.state import best_trials

if TYPE_CHECKING:  # torch: `show`, `best` and `studies` print without importing it
    from hvit_sweeps.checkpoint import Checkpoint

__all__ = [
    "SweepDashboard",
    "TrainProgress",
    "best_trials",
    "console",
    "dataset_line",
    "eval_table",
    "metrics_table",
    "sweep_summary",
    "train_result_table",
    "trials_table",
]

console = Console(highlight=False)
# A log (a pipe, a file, CI) keeps each line whole: folding at 80 columns would split a trial's params or a link.
console.soft_wrap = not console.is_terminal


def dataset_line(info: DatasetInfo, sizes: Mapping[str, int], fingerprint: str) -> str:
    """One line naming the data; synthetic data always says so."""
    counts = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
    style = "bold yellow" if info.synthetic else "bold"
    return (
        f"[{style}]dataset: {info.label}[/{style}]  {info.num_classes} classes, "
        f"{info.channels}x{info.image_size}x{info.image_size}, {counts}  (hash {fingerprint})"
    )


# Without a terminal (a pipe, a CI log, nohup) rich draws nothing live: plain lines at this pace instead.
PLAIN_EVERY_SECONDS = 10.0


def plan_lines(plan: RunPlan) -> list[str]:
    """What a run is about to do: data, model, device, precision and step, before the first batch."""
    stats = plan.model_stats
    return [
        dataset_line(plan.dataset, plan.sizes, plan.fingerprint),
        f"model: {stats['params_m']:.3f} M params, {stats['flops_m']:.1f} MFLOPs per image, "
        f"{int(stats['num_stages'])} stages, depth {int(stats['total_depth'])}",
        f"device {plan.device}, {plan.precision}, {plan.step_mode} steps; "
        f"epochs {plan.start_epoch}-{plan.epochs}, {plan.batches_per_epoch} batches each",
    ]


class _PlainPace:
    """Decides when a non-terminal run prints a progress line: at most every PLAIN_EVERY_SECONDS."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < PLAIN_EVERY_SECONDS:
            return False
        self.last = now
        return True


def epoch_time_left(elapsed: float, batch: int, num_batches: int) -> str:
    """About how long the rest of the epoch takes at this epoch's pace so far; "" while too early to say.

    On a CPU an epoch of a real model takes minutes, and "batch 3 of 87" alone does not say how many.
    """
    if batch < 2 or elapsed < 5 or batch >= num_batches:
        return ""
    seconds = elapsed / batch * (num_batches - batch)
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


class _EpochClock:
    """When the current epoch started, and so about how long its rest will take."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.started = time.monotonic()

    def left(self, batch: int, num_batches: int) -> str:
        """The suffix ' (~4 min left)' for a progress line, or '' while too early to say."""
        left = epoch_time_left(time.monotonic() - self.started, batch, num_batches)
        return f" ({left} left)" if left else ""


class TrainProgress(Callback):
    """`train`'s output: a header, epoch and batch bars (plain lines without a terminal), a line per epoch."""

    def __init__(self, epochs: int, *, start_epoch: int = 1) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.epoch = start_epoch
        self.clock = _EpochClock()
        self.epochs = self.progress.add_task("epochs", total=epochs, completed=start_epoch - 1)
        self.batches = self.progress.add_task("starting", total=None)
        self.pace = _PlainPace()

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_phase(self, phase: str) -> None:
        self.progress.update(self.batches, description=phase)
        if not console.is_terminal:
            console.print(f"{phase} ...")

    def on_train_start(self, plan: RunPlan) -> None:
        for line in plan_lines(plan):
            self.progress.console.print(line)
        self.progress.update(self.batches, description=f"epoch {plan.start_epoch} batches")
        self.clock.restart()

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        self.progress.update(self.batches, completed=batch, total=num_batches)
        if not console.is_terminal and self.pace.due():
            console.print(f"epoch {self.epoch}: batch {batch}/{num_batches}{self.clock.left(batch, num_batches)}")

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.epoch = report.epoch + 1
        self.clock.restart()
        self.progress.update(self.epochs, completed=report.epoch)
        # reset, not update: the time-left estimate starts afresh instead of reading the count going back to 0
        self.progress.reset(self.batches, description=f"epoch {self.epoch} batches")
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


def trial_values(trial: FrozenTrial, metric_names: Sequence[str]) -> str:
    """The trial's objective values; else its last reported value, marked with its epoch and why it has no more."""
    if not trial.values:
        last = max(trial.intermediate_values) if trial.intermediate_values else None
        if last is None:
            return ""
        # A FAIL trial was interrupted or failed: it is not running, whatever its last report says.
        why = {TrialState.RUNNING: "running", TrialState.PRUNED: "pruned"}.get(trial.state, "then stopped")
        return f"{format_metric(metric_names[0], trial.intermediate_values[last])} at epoch {last} ({why})"
    return ", ".join(format_metric(name, v) for name, v in zip(metric_names, trial.values, strict=False))


def short_params(params: Mapping[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.split('.', 1)[-1]}={shown}")
    return " ".join(parts)


def trials_table(trials: Iterable[FrozenTrial], *, title: str, metric_names: Sequence[str]) -> Table:
    """One row per trial: number, state, value(s), params, epochs and duration."""
    table = Table(title=title, title_justify="left")
    for column in ("#", "state", " / ".join(metric_names), "epochs", "duration", "cost", "params"):
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
            format_cost(trial.user_attrs.get(ATTR_COST)),
            short_params(trial.params),
        )
    return table


class _TrialStatus(Callback):
    """Keeps the dashboard's "now" column for one trial: its phase, then epoch and batch."""

    def __init__(self, dashboard: SweepDashboard, study: optuna.Study, number: int) -> None:
        self.dashboard, self.study, self.number = dashboard, study, number
        self.epoch = 1
        self.clock = _EpochClock()

    def on_phase(self, phase: str) -> None:
        self.dashboard.set_status(self.study, self.number, phase)

    def on_train_start(self, plan: RunPlan) -> None:
        self.epoch = plan.start_epoch
        self.clock.restart()
        self.dashboard.set_status(self.study, self.number, f"epoch {self.epoch}: starting")

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        text = f"epoch {self.epoch}: batch {batch} of {num_batches}{self.clock.left(batch, num_batches)}"
        self.dashboard.set_status(self.study, self.number, text)

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.epoch = report.epoch + 1
        self.clock.restart()
        line = "  ".join(f"{k} {format_metric(k, report.metrics[k])}" for k in ("val_acc1", "val_loss"))
        self.dashboard.set_status(self.study, self.number, f"epoch {report.epoch} done: {line}", force=True)
        return None


class SweepDashboard:
    """Live view of a study, read from its storage: trial bar, running trials, best so far.

    Without a terminal it prints plain lines instead: each trial's start and end,
    each epoch, and where the trial is at most every PLAIN_EVERY_SECONDS.
    """

    def __init__(self, *, study_name: str, target: int, metric_names: Sequence[str], top: int = 5) -> None:
        self.study_name, self.target, self.metric_names, self.top = study_name, target, metric_names, top
        self.live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
        self.status: dict[int, str] = {}
        self.pace = _PlainPace()
        self.drawn = 0.0
        self.printed = ""

    def __enter__(self) -> SweepDashboard:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
        console.print()

    def refresh(self, study: optuna.Study) -> None:
        self.drawn = time.monotonic()
        if self.live is not None:
            self.live.update(self.render(study), refresh=True)
            return
        summary = self._plain_summary(study)
        if summary != self.printed:  # polled often: a plain log gets a line when something changed
            console.print(summary)
            self.printed = summary

    def _plain_summary(self, study: optuna.Study) -> str:
        record = StudyRecord.of(study)
        counts = record.counts
        chosen = record.best(1)
        best = f"; best {trial_values(chosen[0], self.metric_names)} (trial {chosen[0].number})" if chosen else ""
        return (
            f"study {self.study_name}: {counts['finished']}/{self.target} trials ({counts['complete']} complete, "
            f"{counts['pruned']} pruned, {counts['failed']} failed){best}"
        )

    def trial_callback(self, study: optuna.Study, trial_number: int) -> Callback:
        return _TrialStatus(self, study, trial_number)

    def set_status(self, study: optuna.Study, number: int, text: str, *, force: bool = False) -> None:
        """A trial's "now"; the screen is redrawn at most twice a second (it reads the storage)."""
        first = number not in self.status
        self.status[number] = text
        if self.live is None:
            if first:
                trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
                console.print(f"trial {number} started: {short_params(trial.params) if trial else ''}")
            if force or first or self.pace.due() or not text.startswith("epoch"):
                console.print(f"trial {number}: {text}")
        elif force or time.monotonic() - self.drawn > 0.5:
            self.refresh(study)

    def render(self, study: optuna.Study) -> Group:
        record = StudyRecord.of(study)
        counts = record.counts
        header = Table.grid(padding=(0, 2))
        header.add_row(
            f"[bold]study {self.study_name}[/bold]",
            ProgressBar(total=max(self.target, 1), completed=min(counts["finished"], self.target), width=30),
            f"{counts['finished']}/{self.target} trials",
            f"[green]{counts['complete']} complete[/]  [yellow]{counts['pruned']} pruned[/]  "
            f"[red]{counts['failed']} failed[/]",
        )
        running = Table(title="running", title_justify="left", show_edge=False)
        for column in ("#", "epochs done", "progress", "now", f"last {self.metric_names[0]}", "params"):
            running.add_column(column)
        for trial in record.in_state(TrialState.RUNNING):
            epoch, epochs = trial.user_attrs.get(ATTR_EPOCH, 0), trial.user_attrs.get(ATTR_EPOCHS, 1)
            running.add_row(
                str(trial.number),
                f"{epoch}/{epochs}",
                ProgressBar(total=epochs, completed=epoch, width=20),
                self.status.get(trial.number, "starting"),
                trial_values(trial, self.metric_names),
                short_params(trial.params),
            )
        chosen = record.best(self.top)
        best = (
            trials_table(chosen, title="best so far", metric_names=self.metric_names)
            if chosen
            else Text("no complete trial yet", style="dim")
        )
        return Group(header, running, best)


def sweep_summary(study: optuna.Study, *, metric_names: Sequence[str] | None = None) -> Table:
    """Counts by state, then the best value(s) and params; ``metric_names`` [the study's]."""
    record = StudyRecord.of(study)
    names = record.metric_names if metric_names is None else metric_names
    surplus = sum(bool(t.user_attrs.get(ATTR_SURPLUS)) for t in record.trials)
    table = Table(title=f"study {record.name}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
        extra = f" ({surplus} surplus, never trained)" if state == TrialState.FAIL and surplus else ""
        table.add_row(state.name.lower(), f"{len(record.in_state(state))}{extra}")
    chosen = record.best(1)
    if not chosen:
        table.add_row("best", "no complete trial yet")
    elif record.multi_objective:
        table.add_row("pareto set", ", ".join(f"#{t.number} ({trial_values(t, names)})" for t in chosen))
    else:
        table.add_row(f"best {names[0]}", f"{format_metric(names[0], chosen[0].values[0])} (trial {chosen[0].number})")
        table.add_row("best params", short_params(chosen[0].params))
    return table
