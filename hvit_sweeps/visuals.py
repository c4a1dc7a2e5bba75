"""Per-trial visuals: how a trained model fails, and what it was fed.

From a model, its loaders and the dataset's :class:`~hvit_sweeps.data.DatasetInfo`,
:func:`write_trial_visuals` predicts the validation split once and writes:

- ``confusion_matrix.png`` and ``confusion_matrix.json`` (rows true, columns predicted);
- ``per_class_accuracy.json`` and ``per_class_accuracy.png`` (sorted, worst first);
- ``misclassified.png``: val images the model got wrong, with predicted and true labels;
- ``training_curves.png``: losses, accuracy and learning rate per epoch;
- ``train_batch.png``: the first augmented training batch, as the model saw it.

Figures are matplotlib (Agg) PNGs sized by the class count, so 10 and 100
classes both stay readable. A sweep logs the folder as the trial run's
``visuals/`` artifacts (:func:`log_visuals`); the report reads them back
(:func:`download_visuals`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import MaxNLocator
from torch import nn

from hvit_sweeps.checkpoint import Checkpoint, load_model
from hvit_sweeps.data import (
    BatchLoader,
    DatasetInfo,
    DatasetSplits,
    Loaders,
    make_loaders,
)
from hvit_sweeps.keys import VISUALS_DIR
from hvit_sweeps.metrics import curve_panels

if TYPE_CHECKING:
    from hvit_sweeps.tracking import Tracker

__all__ = [
    "Predictions",
    "confusion_matrix",
    "download_visuals",
    "log_visuals",
    "per_class_accuracy",
    "plot_confusion_matrix",
    "plot_misclassified",
    "plot_per_class_accuracy",
    "plot_train_batch",
    "plot_training_curves",
    "predict",
    "write_checkpoint_visuals",
    "write_trial_visuals",
]

P = ParamSpec("P")
R = TypeVar("R")

_DPI = 110
_ANNOTATE_MAX_CLASSES = 20  # above this, cells get no numbers and counts a log colour scale


@dataclass
class Predictions:
    """Every val sample's true and predicted class, plus the first few mistakes' images.

    ``wrong_images`` are normalised (K, C, H, W) on the CPU, as the loader yielded them.
    """

    true: np.ndarray  # (N,) int64
    pred: np.ndarray  # (N,) int64
    wrong_images: torch.Tensor
    wrong_true: np.ndarray  # (K,)
    wrong_pred: np.ndarray  # (K,)
    wrong_confidence: np.ndarray  # (K,) softmax probability of the predicted class


@torch.no_grad()
def predict(model: nn.Module, loader: BatchLoader, *, keep_wrong: int = 40) -> Predictions:
    """Run ``model`` over ``loader`` once (eval mode, fp32) and keep its predictions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    true, pred, wrong = [], [], []
    kept = 0
    for x, y in loader:
        probs = model(x.to(device)).float().softmax(dim=1)
        confidence, guess = probs.max(dim=1)
        true.append(y.cpu())
        pred.append(guess.cpu())
        if kept < keep_wrong:
            miss = (guess != y.to(device)).nonzero().flatten()[: keep_wrong - kept]
            wrong.append((x[miss].float().cpu(), y[miss].cpu(), guess[miss].cpu(), confidence[miss].cpu()))
            kept += len(miss)
    model.train(was_training)
    if not true:
        raise ValueError("the validation loader yielded no batches")
    parts = [torch.cat(column) for column in zip(*wrong, strict=False)] if wrong else [torch.empty(0)] * 4
    return Predictions(
        true=torch.cat(true).numpy(),
        pred=torch.cat(pred).numpy(),
        wrong_images=parts[0],
        wrong_true=parts[1].numpy().astype(np.int64),
        wrong_pred=parts[2].numpy().astype(np.int64),
        wrong_confidence=parts[3].numpy(),
    )


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1 accuracy per true class (None where the split has no sample of it), and overall."""
    support = matrix.sum(axis=1)
    correct = np.diag(matrix)
    classes = [
        {
            "index": i,
            "name": name,
            "accuracy": float(correct[i] / support[i]) if support[i] else None,
            "correct": int(correct[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    total = int(support.sum())
    return {"accuracy": float(correct.sum() / total) if total else None, "samples": total, "classes": classes}


# -- figures ---------------------------------------------------------------------------


def _default_style(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw in matplotlib's default style: Optuna's plots switch the global one to ggplot."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with plt.style.context("default"):
            return draw(*args, **kwargs)

    return wrapper


@_default_style
def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Counts with class names on both axes; many classes get a log colour scale and small labels."""
    n = len(class_names)
    small = n <= _ANNOTATE_MAX_CLASSES
    # At most 8 in (about 1000 px with labels, at _DPI): it fits the report's box at 100 classes;
    # 28 in (2875 px) took 2.7 s to draw and showed a quarter of itself.
    side = 7.0 if small else min(8.0, 3.0 + 0.05 * n)
    font = 9 if small else max(4.0, min(7.0, 450 / n))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = plt.get_cmap("Blues" if small else "viridis").with_extremes(bad="white")  # zero cells: nothing there
    shown = np.ma.masked_equal(matrix, 0)
    vmax = max(1, int(matrix.max()))
    norm = Normalize(0, vmax) if small else LogNorm(1, max(2, vmax))
    image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=class_names, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=class_names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if small:
        _annotate_cells(ax, matrix)
    else:
        ax.set_xticks(ticks - 0.5, minor=True)
        ax.set_yticks(ticks - 0.5, minor=True)
        ax.grid(which="minor", color="#eeeeee", linewidth=0.3)
        ax.tick_params(which="minor", length=0)
    label = "samples" if small else "samples (log scale; white = none)"
    bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.02, label=label)
    if not small:  # whole counts, not 2x10^0
        bar.set_ticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t < vmax] + [vmax])
        bar.set_ticklabels([str(t) for t in bar.get_ticks().astype(int)])
        bar.minorticks_off()
    ax.set_title(textwrap.fill(title or "confusion matrix", 70), fontsize=11)  # wrapped: never cut off
    return _save(fig, path)


def _annotate_cells(ax: Any, matrix: np.ndarray) -> None:
    """Write each non-zero count in its cell, white on dark cells."""
    threshold = matrix.max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            color = "white" if count > threshold else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8, color=color)


@_default_style
def plot_per_class_accuracy(summary: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """Horizontal bars sorted worst first (top), coloured by accuracy, with the mean marked."""
    rows = sorted(
        (c for c in summary["classes"] if c["accuracy"] is not None), key=lambda c: (c["accuracy"], c["index"])
    )
    n = len(rows)
    small = n <= _ANNOTATE_MAX_CLASSES
    fig, ax = plt.subplots(figsize=(8, max(3.0, 1.4 + (0.32 if small else 0.16) * n)))
    values = [c["accuracy"] for c in rows]
    positions = np.arange(n)
    ax.barh(positions, values, color=plt.get_cmap("RdYlGn")(values), edgecolor="#555555", linewidth=0.3)
    ax.set_yticks(positions, labels=[c["name"] for c in rows], fontsize=9 if small else 6)
    ax.set_ylim(n - 0.5, -0.5)  # worst class on top
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("top-1 accuracy on val")
    if summary["accuracy"] is not None:
        ax.axvline(
            summary["accuracy"],
            color="#333333",
            linestyle="--",
            linewidth=1,
            label=f"overall {summary['accuracy']:.1%}",
        )
        ax.legend(loc="lower right", fontsize=8)
    for y, c in enumerate(rows):
        ax.text(c["accuracy"] + 0.01, y, f"{c['correct']}/{c['support']}", va="center", fontsize=7 if small else 4.5)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.set_title(title or "per-class accuracy", fontsize=11)
    return _save(fig, path)


@_default_style
def plot_misclassified(predictions: Predictions, info: DatasetInfo, path: Path, *, limit: int = 40) -> Path:
    """A grid of wrongly predicted val images titled "pred" (red) and "true"."""
    count = min(limit, len(predictions.wrong_true))
    if count == 0:
        return _message_figure("no misclassified validation images", path)
    images = denormalize(predictions.wrong_images[:count], info)
    titles = [
        (f"pred {_short(info.class_names[p])} {c:.0%}", f"true {_short(info.class_names[t])}")
        for p, t, c in zip(predictions.wrong_pred, predictions.wrong_true, predictions.wrong_confidence, strict=False)
    ]
    fig = _image_grid(images, titles[:count], colors=("#c62828", "#1b5e20"))
    fig.suptitle(f"misclassified val images (first {count}; predicted with its confidence, then true)", fontsize=10)
    return _save(fig, path)


@_default_style
def plot_train_batch(loader: BatchLoader, info: DatasetInfo, path: Path, *, limit: int = 40) -> Path:
    """The first batch of epoch 1 of ``loader``, augmented and de-normalised, titled by label.

    MixUp/CutMix batches carry soft targets; each image is titled with its two
    largest labels and their weights.
    """
    loader.set_epoch(1)
    x, y = next(iter(loader))
    count = min(limit, len(x))
    images = denormalize(x[:count].float().cpu(), info)
    titles = [(_label_text(target, info),) for target in y[:count].cpu()]
    fig = _image_grid(images, titles, colors=("#222222",))
    fig.suptitle(f"one augmented training batch, epoch 1 ({count} of {len(x)} images)", fontsize=10)
    return _save(fig, path)


def _label_text(target: torch.Tensor, info: DatasetInfo) -> str:
    if target.ndim == 0:
        return _short(info.class_names[int(target)])
    weights, classes = target.float().topk(min(2, len(target)))
    if weights[0] > 0.999:
        return _short(info.class_names[int(classes[0])])
    return "\n".join(f"{_short(info.class_names[int(c)], 10)} {w:.2f}" for w, c in zip(weights, classes, strict=False))


@_default_style
def plot_training_curves(history: Sequence[dict[str, float]], path: Path, *, title: str = "") -> Path:
    """Loss, accuracy and learning rate against epoch; the best val_acc1 epoch is marked."""
    if not history:
        return _message_figure("no per-epoch history recorded", path)
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    panels = curve_panels()
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.8))
    marker = "o" if len(epochs) <= 30 else None
    for ax, (name, keys) in zip(axes, panels.items(), strict=False):
        for key in keys:
            values = [h.get(key, math.nan) for h in history]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, marker=marker, markersize=3, label=key)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(color="#e5e5e5", linewidth=0.5)
        if ax.lines:
            ax.legend(fontsize=8)
    by_panel = dict(zip(panels, axes, strict=True))
    _mark_best(by_panel["accuracy"], epochs, [h.get("val_acc1", math.nan) for h in history])
    by_panel["learning rate"].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.suptitle(title or "training curves", fontsize=11)
    return _save(fig, path)


def _mark_best(ax: Any, epochs: list[int], values: list[float]) -> None:
    finite = [(v, e) for v, e in zip(values, epochs, strict=False) if not math.isnan(v)]
    if finite:
        value, epoch = max(finite)
        ax.axvline(epoch, color="#999999", linestyle=":", linewidth=1)
        ax.annotate(
            f"best {value:.1%} @ {epoch}", (epoch, value), fontsize=8, xytext=(4, -12), textcoords="offset points"
        )


# -- helpers ---------------------------------------------------------------------------


def denormalize(images: torch.Tensor, info: DatasetInfo) -> np.ndarray:
    """Normalised (B, C, H, W) -> (B, H, W, C) floats in [0, 1] for imshow (C is 1 or 3)."""
    mean = torch.tensor(info.mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _image_grid(images: np.ndarray, titles: Sequence[Sequence[str]], *, colors: Sequence[str]) -> Any:
    """Images in rows of 8: ``titles[i][0]`` above image i, ``titles[i][1]`` (if any) below it."""
    cols = min(8, len(images))
    rows = math.ceil(len(images) / cols)
    lines = max(sum(text.count("\n") + 1 for text in title) for title in titles)
    fig, axes = plt.subplots(rows, cols, figsize=(1.65 * cols, (1.5 + 0.17 * lines) * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        gray = image.shape[-1] == 1
        ax.imshow(
            image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest"
        )
        # Ticks and frame off by hand: axis("off") would also hide the label below the image.
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title[0], fontsize=7, color=colors[0], pad=2)
        if len(title) > 1:
            ax.set_xlabel(title[1], fontsize=7, color=colors[1], labelpad=2)
    return fig


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


@_default_style
def _message_figure(message: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# -- entry points ----------------------------------------------------------------------


def write_checkpoint_visuals(
    checkpoint: Checkpoint,
    splits: DatasetSplits,
    *,
    overrides: Mapping[str, Any] | None = None,
    out_dir: Path,
    history: Sequence[dict[str, float]] | None = None,
) -> list[Path]:
    """The visuals of a saved model on ``splits`` (the data it was chosen on).

    Args:
        overrides: Config paths to change first, such as ``runtime.device``.
        history: Per-epoch metrics; by default the checkpoint's own, when it kept them.
    """
    from hvit_sweeps.config import build_config
    from hvit_sweeps.runtime import resolve_device

    config = build_config(checkpoint.config.model_dump(mode="json"), overrides or {}, info=splits.info)
    device = resolve_device(config.runtime.device)
    loaders = make_loaders(splits, config.data, device=device, seed=config.seed)
    saved_history = (checkpoint.training_state or {}).get("history", [])
    model = load_model(checkpoint).to(device)
    return write_trial_visuals(model, loaders, splits.info, saved_history if history is None else history, out_dir)


def write_trial_visuals(
    model: nn.Module,
    loaders: Loaders,
    info: DatasetInfo,
    history: Sequence[dict[str, float]],
    out_dir: Path,
) -> list[Path]:
    """Predict the val split once and write every per-trial visual under ``out_dir``.

    Args:
        model: The trained model (best weights), on the loaders' device.
        loaders: ``make_loaders`` output: ``val`` is predicted, ``train`` previewed.
        info: Class names and normalisation of the data.
        history: ``TrainResult.history``: one dict per epoch (``epoch``, ``train_loss``, ...).
        out_dir: Created if missing; the files listed in the module docstring go here.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = predict(model, loaders.val)
    matrix = confusion_matrix(predictions.true, predictions.pred, info.num_classes)
    summary = per_class_accuracy(matrix, info.class_names)
    what = f"{info.label}, {summary['samples']} val images, top-1 {summary['accuracy']:.1%}"
    return [
        _write_json(
            out_dir / "confusion_matrix.json", {"class_names": list(info.class_names), "matrix": matrix.tolist()}
        ),
        plot_confusion_matrix(
            matrix, info.class_names, out_dir / "confusion_matrix.png", title=f"confusion matrix: {what}"
        ),
        _write_json(out_dir / "per_class_accuracy.json", summary),
        plot_per_class_accuracy(summary, out_dir / "per_class_accuracy.png", title=f"per-class accuracy: {what}"),
        plot_misclassified(predictions, info, out_dir / "misclassified.png"),
        plot_training_curves(history, out_dir / "training_curves.png", title=f"training curves: {info.label}"),
        plot_train_batch(loaders.train, info, out_dir / "train_batch.png"),
    ]


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def log_visuals(tracker: Tracker, run_id: str, out_dir: Path) -> None:
    """Upload every file of ``out_dir`` to the run as ``visuals/<name>``."""
    tracker.log_artifacts(run_id, out_dir, VISUALS_DIR)


def download_visuals(tracker: Tracker, run_id: str, dst: Path) -> Path | None:
    """Fetch a run's ``visuals/`` artifacts into ``dst/visuals``; None when the run has none."""
    if not tracker.has_artifacts(run_id, VISUALS_DIR):
        return None
    dst.mkdir(parents=True, exist_ok=True)
    with _no_progress_bar():
        return tracker.download_artifacts(run_id, VISUALS_DIR, dst)


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar per download on stderr; a report or export has its own output."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
