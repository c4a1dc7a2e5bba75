"""Every figure a run produces, in one table: its kind, its better side, its summary and where it shows.

A new metric is a row here plus the code that produces it. The lists the rest of
the package needs (what a study may optimise, what ``train`` may monitor, what a
trial run summarises, the training-curve panels, the MLflow view's columns, how
a value is printed) are all read off this table, and ``tests/test_metrics.py``
fails when a produced figure is missing from it, or a row is never produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hvit_sweeps.keys import best_metric, cost_metric, model_metric

__all__ = [
    "METRICS",
    "Monitor",
    "better",
    "Metric",
    "cost_metrics",
    "curve_panels",
    "epoch_metrics",
    "format_metric",
    "held_out_metrics",
    "metric",
    "monitors",
    "objectives",
    "size_metrics",
    "summarised",
    "tracked_metric",
    "view_metrics",
]

# epoch: the training loop reports it every epoch (and Optuna may prune on it);
# test: the best epoch's weights evaluated once on the test split;
# size: a figure of the model, known before training;
# cost: measured over a whole trial (hvit_sweeps.cost).
Kind = Literal["epoch", "test", "size", "cost"]
# How a person reads it: a fraction shown as a percentage, a rate, a learning rate, ...
Style = Literal["percent", "sci", "rate", "millions", "plain"]
Panel = Literal["loss", "accuracy", "learning rate"]
# What `train` may pick its best epoch by: validation figures. A Literal, so that the config
# and the --monitor flag offer exactly these; tests/test_metrics.py holds it to the table.
Monitor = Literal["val_acc1", "val_acc5", "val_loss"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    direction: Literal["maximize", "minimize"] | None = None  # None: no better side (the learning rate)
    objective: bool = False  # a study may optimise it
    summary: bool = False  # a trial run keeps its value at the best epoch as best/<name>
    style: Style = "plain"
    panel: Panel | None = None  # its training-curves panel, if it is drawn there
    view: bool = False  # a column of the study's saved MLflow view

    @property
    def tracked(self) -> str:
        """The trial-run metric in MLflow that holds the trial's one value of it."""
        if self.kind == "cost":
            return cost_metric(self.name)
        return model_metric(self.name) if self.kind == "size" else best_metric(self.name)


def _accuracy(name: str, panel: Panel | None = "accuracy", *, kind: Kind = "epoch") -> Metric:
    validation = name.startswith("val_")
    return Metric(name, kind, "maximize", objective=validation, summary=validation, style="percent", panel=panel)


def _loss(name: str, *, kind: Kind = "epoch") -> Metric:
    epoch = kind == "epoch"
    return Metric(name, kind, "minimize", objective=epoch, summary=epoch, panel="loss" if epoch else None)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        # -- per epoch (the training loop) --
        _accuracy("val_acc1"),
        _accuracy("val_acc5"),
        _loss("val_loss"),
        _loss("train_loss"),
        _accuracy("train_acc1"),  # on the augmented batches, as trained: below val_acc1 under mixup/cutmix
        Metric("lr", "epoch", style="sci", panel="learning rate"),
        Metric("epoch_seconds", "epoch", "minimize"),
        Metric("images_per_second", "epoch", "maximize", style="rate"),
        # -- once, on the test split (train --evaluate-test, best --retrain) --
        _accuracy("test_acc1", None, kind="test"),
        _accuracy("test_acc5", None, kind="test"),
        _loss("test_loss", kind="test"),
        # -- the model's size --
        Metric("params_m", "size", "minimize", objective=True, style="millions", view=True),
        Metric("flops_m", "size", "minimize", objective=True, style="millions", view=True),
        Metric("params", "size", "minimize", style="plain"),
        Metric("total_depth", "size"),
        Metric("num_stages", "size"),
        # -- measured over the trial --
        Metric("wall_seconds", "cost", "minimize", objective=True),
        Metric("device_seconds", "cost", "minimize", objective=True, view=True),
        Metric("peak_memory_mb", "cost", "minimize", objective=True, view=True),
        Metric("train_images_per_second", "cost", "maximize", objective=True, style="rate"),
        Metric("latency_ms", "cost", "minimize", objective=True, view=True),
        Metric("latency_batch", "cost"),  # the batch the latency was timed on: context, not a score
    )
}


def metric(name: str) -> Metric:
    """The registered metric ``name``; KeyError names the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a registered metric (hvit_sweeps.metrics: {', '.join(METRICS)})") from None


def _names(kind: Kind | None = None, **flags: bool) -> tuple[str, ...]:
    return tuple(
        m.name
        for m in METRICS.values()
        if (kind is None or m.kind == kind) and all(getattr(m, flag) == want for flag, want in flags.items())
    )


def epoch_metrics() -> tuple[str, ...]:
    """What the training loop reports every epoch."""
    return _names("epoch")


def held_out_metrics() -> tuple[str, ...]:
    """What the best weights score once on the test split."""
    return _names("test")


def size_metrics() -> tuple[str, ...]:
    return _names("size")


def cost_metrics() -> tuple[str, ...]:
    return _names("cost")


def objectives(kind: Kind | None = None) -> tuple[str, ...]:
    """What a study may optimise (of one kind: ``epoch`` ones can be pruned on)."""
    return _names(kind, objective=True)


def monitors() -> tuple[str, ...]:
    """What `train` may pick its best epoch by."""
    return get_args(Monitor)


def better(name: str) -> Literal["min", "max"]:
    """Which way is better for a metric with a direction."""
    return "min" if metric(name).direction == "minimize" else "max"


def summarised() -> tuple[str, ...]:
    """The epoch metrics a trial run keeps at its best epoch (best/<name>)."""
    return _names(summary=True)


def view_metrics() -> tuple[str, ...]:
    """The run metrics the study's MLflow view shows as columns, beside the objectives."""
    return tuple(METRICS[name].tracked for name in _names(view=True))


def tracked_metric(name: str) -> str:
    """The trial-run metric in MLflow holding an objective's final value (epoch metrics: at the best epoch)."""
    return metric(name).tracked


def curve_panels() -> dict[Panel, tuple[str, ...]]:
    """The training-curves figure: panel title -> the epoch metrics drawn in it."""
    panels: tuple[Panel, ...] = get_args(Panel)  # left to right: loss, accuracy, learning rate
    return {panel: tuple(m.name for m in METRICS.values() if m.panel == panel) for panel in panels}


def format_metric(name: str, value: object) -> str:
    """A value as a person reads it: accuracies as percentages, rates whole, learning rates in e-notation.

    ``name`` may carry a prefix (``best/val_acc1``, ``seen_val_acc1``, ``cost/latency_ms``): the
    registered name it ends with decides.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    style = _style_of(name)
    if style == "percent":
        return f"{100 * value:.2f}%"
    if style == "sci":
        return f"{value:.2e}"
    if style == "rate":
        return f"{value:,.0f}"
    if style == "millions":
        return f"{value:.3f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _style_of(name: str) -> Style:
    base = name.rsplit("/", 1)[-1]
    for candidate in (base, *(base.split("_", i)[-1] for i in (1, 2))):
        if candidate in METRICS:
            return METRICS[candidate].style
    return "percent" if "acc" in base else "plain"  # a figure from elsewhere (an old run): read it by its name
