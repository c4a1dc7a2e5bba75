"""`train` and `eval`: one model trained, or one checkpoint evaluated."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvit_sweeps.flags import parse_sets

if TYPE_CHECKING:
    from hvit_sweeps.config import TrainConfig

__all__ = ["evaluate", "train"]


def train(config_layer: dict[str, Any], sets: list[str] | None, *, resume: Path | None) -> int:
    """Train one HViT with live progress, print its result; the exit code (1: diverged, 130: interrupted)."""
    from hvit_sweeps.config import build_config

    overrides = parse_sets(sets)
    checkpoint = None
    if resume is None:  # a flag mistake is answered before torch loads (seconds on a busy machine)
        config = build_config(config_layer, overrides, source="train flags")

    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.console import TrainProgress, console, dataset_line, train_result_table
    from hvit_sweeps.interrupt import graceful_interrupts
    from hvit_sweeps.train import train as run_training

    if resume is not None:  # the checkpoint's config is the layer under the flags
        checkpoint = load_checkpoint(resume)
        config = build_config(checkpoint.config.model_dump(mode="json"), config_layer, overrides, source="train flags")
    start = checkpoint.epoch + 1 if checkpoint else 1
    try:
        with graceful_interrupts(console.print), TrainProgress(config.epochs, start_epoch=start) as progress:
            result = run_training(config, callbacks=[progress], resume=checkpoint)
    except KeyboardInterrupt:
        console.print(interrupted_line(config))
        return 130
    console.print(dataset_line(result.dataset, result.dataset_sizes, result.dataset_fingerprint))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(train_result_table(result))
    if config.checkpoint_path is not None and result.best_epoch:
        console.print(f"best checkpoint: {config.checkpoint_path}")
    return 1 if result.status == "diverged" else 0


def interrupted_line(config: TrainConfig) -> str:
    """What a stopped `train` kept, and how to go on."""
    kept = [str(p) for p in (config.checkpoint_path, config.last_checkpoint_path) if p is not None and p.is_file()]
    if config.last_checkpoint_path is not None and config.last_checkpoint_path.is_file():
        resume = shlex.join(["hvit-sweep", "train", "--resume", str(config.last_checkpoint_path)])
        return f"interrupted: kept {', '.join(kept)}; continue with: {resume}"
    if kept:
        return f"interrupted: kept the best checkpoint so far, {kept[0]} (add --save-final to be able to --resume)"
    return "interrupted before any epoch ended: nothing was saved"


def evaluate(
    checkpoint: Path,
    *,
    splits: tuple[str, ...],
    visuals: Path | None,
    config_layer: dict[str, Any],
) -> None:
    """Evaluate a checkpoint on the validation split it was chosen on, and on test; print the results."""
    from hvit_sweeps.flags import check_values

    check_values(config_layer, source="eval flags")  # a flag mistake is answered before torch loads
    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.console import console, dataset_line, eval_table
    from hvit_sweeps.evaluate import evaluate_checkpoint as run_eval
    from hvit_sweeps.visuals import write_checkpoint_visuals

    saved = load_checkpoint(checkpoint)
    results, data = run_eval(saved, overrides=config_layer, splits=splits)
    console.print(dataset_line(data.info, data.sizes, data.fingerprint))
    console.print(eval_table(saved, results))
    if visuals is not None:
        for path in write_checkpoint_visuals(saved, data, overrides=config_layer, out_dir=visuals):
            console.print(f"wrote {path}")
