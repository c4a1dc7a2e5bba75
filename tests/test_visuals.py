"""Per-trial visuals: each file's shape against the dataset, on a tiny CPU model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SMOKE_DATA, TINY_MODEL
from PIL import Image
from torch import nn

from hvit_sweeps.callbacks import TrainResult
from hvit_sweeps.checkpoint import load_checkpoint, load_model
from hvit_sweeps.config import build_config
from hvit_sweeps.data import DatasetSplits, Loaders, load_dataset, make_loaders
from hvit_sweeps.evaluate import evaluate
from hvit_sweeps.runtime import Precision
from hvit_sweeps.train import train
from hvit_sweeps.visuals import (
    Predictions,
    confusion_matrix,
    denormalize,
    per_class_accuracy,
    plot_confusion_matrix,
    plot_misclassified,
    plot_train_batch,
    plot_training_curves,
    predict,
    write_trial_visuals,
)

# 300 synthetic images (100 classes) -> 200 train, 100 val; a two-stage 16/32 model.
TINY: dict[str, Any] = {**SMOKE_DATA, **TINY_MODEL, "epochs": 2}
FILES = {
    "confusion_matrix.json",
    "confusion_matrix.png",
    "per_class_accuracy.json",
    "per_class_accuracy.png",
    "misclassified.png",
    "training_curves.png",
    "train_batch.png",
}


@dataclass
class Trained:
    model: nn.Module
    loaders: Loaders
    splits: DatasetSplits
    result: TrainResult
    out: Path
    paths: list[Path]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Two epochs of the tiny model, then every visual written once."""
    tmp = tmp_path_factory.mktemp("visuals")
    config = build_config(TINY, {"checkpoint_path": str(tmp / "best.pth")}, source="test")
    splits = load_dataset(config.data, seed=config.seed)
    result = train(config, splits=splits, best_checkpoint="at_end")
    model = load_model(load_checkpoint(tmp / "best.pth"))
    loaders = make_loaders(splits, config.data, device=torch.device("cpu"), seed=config.seed)
    paths = write_trial_visuals(model, loaders, splits.info, result.history, tmp / "out")
    return Trained(model, loaders, splits, result, tmp / "out", paths)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()  # a truncated or non-PNG file raises here
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# write_trial_visuals writes exactly the documented files and returns their paths.
def test_every_visual_is_written(trained: Trained) -> None:
    assert {p.name for p in trained.paths} == FILES
    assert {p.name for p in trained.out.iterdir()} == FILES
    for path in trained.paths:
        if path.suffix == ".png":
            width, height = png_size(path)
            assert width > 300 and height > 100, (path.name, width, height)


# The confusion matrix is classes x classes and counts every val sample once.
def test_confusion_matrix_matches_the_val_split(trained: Trained) -> None:
    saved = json.loads((trained.out / "confusion_matrix.json").read_text())
    matrix = np.array(saved["matrix"])
    classes = trained.splits.info.num_classes
    assert matrix.shape == (classes, classes)
    assert matrix.sum() == len(trained.splits.val)
    assert saved["class_names"] == list(trained.splits.info.class_names)
    assert (matrix.sum(axis=1) == np.bincount(trained.splits.val.labels.numpy(), minlength=classes)).all()


# Per-class accuracy has one entry per class, and its overall value is evaluate()'s top-1.
def test_per_class_accuracy_agrees_with_evaluate(trained: Trained) -> None:
    summary = json.loads((trained.out / "per_class_accuracy.json").read_text())
    info = trained.splits.info
    assert [c["name"] for c in summary["classes"]] == list(info.class_names)
    assert sum(c["support"] for c in summary["classes"]) == summary["samples"] == len(trained.splits.val)
    for entry in summary["classes"]:
        expected = entry["correct"] / entry["support"] if entry["support"] else None
        assert entry["accuracy"] == expected
    acc1 = evaluate(trained.model, trained.loaders.val, Precision("cpu", None))["acc1"]
    assert summary["accuracy"] == pytest.approx(acc1)


# A 100-class confusion matrix fits the report's 1000 px box (it was 2875 px, cut off there), yet is
# larger than the 10-class one, whose cells carry their counts.
def test_confusion_matrix_figure_fits_its_box_at_100_classes(trained: Trained, tmp_path: Path) -> None:
    big_w, big_h = png_size(trained.out / "confusion_matrix.png")
    names = [f"class {i}" for i in range(10)]
    matrix = confusion_matrix(np.arange(50) % 10, (np.arange(50) * 3) % 10, 10)
    small_w, small_h = png_size(plot_confusion_matrix(matrix, names, tmp_path / "cm10.png"))
    assert 800 <= big_w <= 1100 and 800 <= big_h <= 1100, (big_w, big_h)
    assert small_w < big_w and small_h < big_h


def test_confusion_matrix_counts_pairs() -> None:
    # row = true, column = predicted
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    summary = per_class_accuracy(matrix, ["a", "b", "c"])
    assert [c["accuracy"] for c in summary["classes"]] == [0.5, 1.0, pytest.approx(2 / 3)]
    assert summary["accuracy"] == pytest.approx(4 / 6)


# A class with no val sample has accuracy None, not a division by zero.
def test_class_without_samples_has_no_accuracy() -> None:
    summary = per_class_accuracy(confusion_matrix(np.array([0]), np.array([0]), 2), ["a", "b"])
    assert summary["classes"][1] == {"index": 1, "name": "b", "accuracy": None, "correct": 0, "support": 0}


# predict() covers the whole split, keeps the mistakes' images and restores train mode.
def test_predict_keeps_mistakes_and_mode(trained: Trained) -> None:
    trained.model.train()
    predictions = predict(trained.model, trained.loaders.val, keep_wrong=5)
    assert trained.model.training
    assert len(predictions.true) == len(predictions.pred) == len(trained.splits.val)
    wrong = int((predictions.true != predictions.pred).sum())
    assert len(predictions.wrong_true) == min(5, wrong)
    assert (predictions.wrong_true != predictions.wrong_pred).all()
    assert predictions.wrong_images.shape[1:] == (3, 32, 32)


# Grayscale images are de-normalised to one channel in [0, 1] and drawn in a grid.
def test_grayscale_misclassified_grid(trained: Trained, tmp_path: Path) -> None:
    from dataclasses import replace

    info = replace(trained.splits.info, channels=1, mean=(0.2860,), std=(0.3530,), class_names=tuple("abcdefghij"))
    images = torch.randn(3, 1, 28, 28)
    pixels = denormalize(images, info)
    assert pixels.shape == (3, 28, 28, 1) and pixels.min() >= 0 and pixels.max() <= 1
    predictions = Predictions(
        true=np.array([0, 1, 2]),
        pred=np.array([1, 2, 0]),
        wrong_images=images,
        wrong_true=np.array([0, 1, 2]),
        wrong_pred=np.array([1, 2, 0]),
        wrong_confidence=np.array([0.5, 0.4, 0.9]),
    )
    width, height = png_size(plot_misclassified(predictions, info, tmp_path / "gray.png"))
    assert width > height > 100  # one row of three


# MixUp's soft targets are previewed with their two largest labels.
def test_train_batch_preview_with_mixup(trained: Trained, tmp_path: Path) -> None:
    config = build_config(TINY, {"data.mixup_alpha": 0.8}, source="test")
    loaders = make_loaders(trained.splits, config.data, device=torch.device("cpu"), seed=0)
    png_size(plot_train_batch(loaders.train, trained.splits.info, tmp_path / "mix.png"))


# Curves need a history; without one the file still exists and says so.
def test_training_curves_without_history(tmp_path: Path) -> None:
    png_size(plot_training_curves([], tmp_path / "empty.png"))
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_acc1": 0.1, "lr": 1e-3}]
    png_size(plot_training_curves(history, tmp_path / "one.png"))
