"""The cost of each per-trial visual: seconds to draw and PNG size, on a checkpoint.

    python benchmarks/figure_cost.py CHECKPOINT.pth [--repeats 3]

Draws on the checkpoint's own data (rebuilt from its seed), as the sweep's visuals do,
timing each figure of :func:`hvit_sweeps.visuals.write_trial_visuals` alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from hvit_sweeps import visuals as v
from hvit_sweeps.checkpoint import load_checkpoint, load_model
from hvit_sweeps.config import build_config
from hvit_sweeps.data import load_dataset, make_loaders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint.config
    splits = load_dataset(config.data, seed=config.seed)
    config = build_config(config.model_dump(mode="json"), info=splits.info)
    loaders = make_loaders(splits, config.data, device=torch.device("cpu"), seed=config.seed)
    model = load_model(checkpoint)
    info = splits.info
    start = time.perf_counter()
    predictions = v.predict(model, loaders.val)
    print(f"predict val: {time.perf_counter() - start:.2f} s")
    matrix = v.confusion_matrix(predictions.true, predictions.pred, info.num_classes)
    summary = v.per_class_accuracy(matrix, info.class_names)
    history = (checkpoint.training_state or {}).get("history", [])
    figures = {
        "confusion_matrix": lambda p: v.plot_confusion_matrix(matrix, info.class_names, p, title="t"),
        "per_class_accuracy": lambda p: v.plot_per_class_accuracy(summary, p, title="t"),
        "misclassified": lambda p: v.plot_misclassified(predictions, info, p),
        "training_curves": lambda p: v.plot_training_curves(history, p, title="t"),
        "train_batch": lambda p: v.plot_train_batch(loaders.train, info, p),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in figures.items():
            path = Path(tmp) / f"{name}.png"
            best = min(_timed(draw, path) for _ in range(args.repeats))
            with Image.open(path) as image:
                size = image.size
            print(f"{name}: {best:.2f} s, {size[0]}x{size[1]} px, {path.stat().st_size / 1e3:.0f} kB")


def _timed(draw: Callable[[Path], object], path: Path) -> float:
    start = time.perf_counter()
    draw(path)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
