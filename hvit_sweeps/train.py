"""The training loop shared by ``hvit-sweep train`` and every sweep trial.

:func:`train` takes one validated :class:`~hvit_sweeps.config.TrainConfig` and a
list of :class:`Callback` objects. After each epoch it hands every callback an
:class:`EpochReport`; a callback that returns a reason stops the run early. That
is how an Optuna trial prunes and how tracking logs, with no second code path.

The step (:mod:`hvit_sweeps.steps`) does no host work: losses and accuracy counts
accumulate on the device and are read once per epoch. The runtime it runs under
is :mod:`hvit_sweeps.runtime`; the optimizer and schedule :mod:`hvit_sweeps.optim`;
the best epoch and the checkpoints :mod:`hvit_sweeps.saving`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hvit_sweeps import interrupt
from hvit_sweeps.callbacks import Callback, EpochReport, RunPlan, TrainResult  # re-exported: train()'s own types
from hvit_sweeps.checkpoint import Checkpoint
from hvit_sweeps.config import TrainConfig
from hvit_sweeps.cost import LATENCY_BATCH, CostMeter, measure_latency
from hvit_sweeps.data import DatasetInfo, DatasetSplits, Loaders, load_dataset, make_loaders
from hvit_sweeps.errors import HvitError
from hvit_sweeps.evaluate import evaluate, prefixed
from hvit_sweeps.model import build_model, count_flops, count_parameters
from hvit_sweeps.optim import make_optimizer, make_schedule, restore_optimization
from hvit_sweeps.runtime import (
    Precision,
    compile_model,
    resolve_device,
    runtime_notes,
    seed_epoch,
    seed_everything,
    step_mode,
)
from hvit_sweeps.saving import Best, Saver, restore_progress, saved_best_weights
from hvit_sweeps.steps import EagerStep, Step, make_step

__all__ = ["Callback", "EpochReport", "TrainResult", "model_stats", "train"]


def _tell(callbacks: Sequence[Callback], phase: str) -> None:
    for callback in callbacks:
        callback.on_phase(phase)


def model_stats(model: nn.Module, config: TrainConfig) -> dict[str, float]:
    """Size figures logged beside every run, so sweeps can trade accuracy for cost."""
    params = count_parameters(model)
    return {
        "params": float(params),
        "params_m": params / 1e6,
        "flops_m": count_flops(model, config.model) / 1e6,
        "total_depth": float(sum(config.model.depths)),
        "num_stages": float(len(config.model.depths)),
    }


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    splits: DatasetSplits | None = None,
    resume: Checkpoint | None = None,
    best_checkpoint: Literal["each_improvement", "at_end"] = "each_improvement",
    select: Literal["best", "last"] = "best",
) -> TrainResult:
    """Train one model as ``config`` says, reporting each epoch to ``callbacks``.

    Args:
        config: The validated run config.
        callbacks: Per-epoch hooks; any of them may stop the run.
        splits: Already loaded data (a sweep worker loads it once for all trials).
        resume: A checkpoint whose weights, optimizer and schedule to continue from.
        best_checkpoint: When to write ``config.checkpoint_path``: at each improvement,
            resumable (a long single run survives a crash), or once at the end,
            weights only (a sweep trial: no disk writes inside its short epochs).
        select: Which epoch's weights are the result: the best by ``config.monitor``, or
            the last (a final model trained on train+val has no unseen val set to choose by).
    """
    device = resolve_device(config.runtime.device)
    meter = CostMeter.start(device)
    seed_everything(config.seed)
    if splits is None:
        _tell(callbacks, "loading data")
        splits = load_dataset(config.data, seed=config.seed)
    _check_data_matches(config, splits.info)
    _tell(callbacks, "building model")
    run = _build_run(config, splits, device, resume=resume, select=select)
    for callback in callbacks:
        callback.on_train_start(run.plan)
    status, reason, epoch = _train_epochs(run, config, callbacks, best_checkpoint=best_checkpoint)
    test_metrics = _finish_run(run, config, resume=resume, best_checkpoint=best_checkpoint)
    cost = {**meter.finish(run.history), **_latency(run)}
    return TrainResult(
        status=status,
        reason=reason,
        epochs_run=epoch,
        best_epoch=run.best.epoch,
        best_metrics=run.best.metrics,
        history=run.history,
        test_metrics=test_metrics,
        model_stats=run.plan.model_stats,
        dataset=splits.info,
        dataset_fingerprint=splits.fingerprint,
        dataset_sizes=splits.sizes,
        notes=runtime_notes(config.runtime, device),
        cost=cost,
        cost_device=meter.device_type,
    )


def _latency(run: _Run) -> dict[str, float]:
    """Inference latency of the run's result on a fixed batch of val images (after the run's clock stopped)."""
    images = next(iter(run.loaders.val))[0][:LATENCY_BATCH]
    # The eager model: a compiled one would recompile for this batch shape inside the probe.
    latency = measure_latency(run.model, images, autocast=run.precision.autocast, memory_format=run.memory_format)
    return {"latency_ms": latency, "latency_batch": float(len(images))}


@dataclass
class _Run:
    """Everything one training run holds between its epochs."""

    model: nn.Module
    compiled: nn.Module
    loaders: Loaders
    step: Step
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    memory_format: torch.memory_format
    saver: Saver
    history: list[dict[str, float]]
    best: Best
    plan: RunPlan


def _build_run(
    config: TrainConfig,
    splits: DatasetSplits,
    device: torch.device,
    *,
    resume: Checkpoint | None,
    select: Literal["best", "last"],
) -> _Run:
    """Loaders, model (restored when resuming), optimizer, schedule and the step, ready for epoch one."""
    loaders = make_loaders(splits, config.data, device=device, seed=config.seed)
    precision = Precision.from_runtime(config.runtime, device)
    model = build_model(config.model).to(device)
    start_epoch, history, best = restore_progress(model, config, resume, select)
    stats = model_stats(model, config)
    memory_format = torch.channels_last if config.runtime.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    use_graphs = step_mode(config.runtime, device) == "cuda-graph"
    optimizer = make_optimizer(model, config.optim, device, capturable=use_graphs)
    scheduler = make_schedule(optimizer, config.optim, len(loaders.train), config.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    if resume is not None and "optimizer" in resume.training_state:
        restore_optimization(resume, optimizer, scheduler, scaler)
    compiled = model if config.runtime.compile == "off" else compile_model(model, config.runtime.compile)
    eager = EagerStep(compiled, optimizer, scaler, precision, config.optim, memory_format)
    step = make_step(eager, graphed=use_graphs)
    plan = RunPlan(
        dataset=splits.info,
        sizes=splits.sizes,
        fingerprint=splits.fingerprint,
        model_stats=stats,
        device=str(device),
        precision=precision.label,
        step_mode=step_mode(config.runtime, device),
        epochs=config.epochs,
        start_epoch=start_epoch,
        batches_per_epoch=len(loaders.train),
    )
    saver = Saver(model, config, list(splits.info.class_names), optimizer, scheduler, scaler)
    return _Run(model, compiled, loaders, step, scheduler, precision, memory_format, saver, history, best, plan)


def _train_epochs(
    run: _Run,
    config: TrainConfig,
    callbacks: Sequence[Callback],
    *,
    best_checkpoint: Literal["each_improvement", "at_end"],
) -> tuple[Literal["completed", "stopped", "diverged"], str, int]:
    """The epoch loop: train, validate, keep the best, save, ask the callbacks; returns how it ended."""
    epoch = run.plan.start_epoch - 1
    for epoch in range(run.plan.start_epoch, config.epochs + 1):
        seed_epoch(config.seed, epoch)
        run.loaders.train.set_epoch(epoch)
        metrics = _run_epoch(run, callbacks)
        run.history.append({"epoch": epoch, **metrics})
        if not all(math.isfinite(metrics[k]) for k in ("train_loss", "val_loss")):
            return "diverged", f"non-finite loss at epoch {epoch}", epoch
        if run.best.update(epoch, metrics, config.monitor, run.model) and best_checkpoint == "each_improvement":
            run.saver.save(config.checkpoint_path, epoch=epoch, metrics=metrics, history=run.history, best=run.best)
        if config.save_final:
            run.saver.save(
                config.last_checkpoint_path, epoch=epoch, metrics=metrics, history=run.history, best=run.best
            )
        report = EpochReport(epoch=epoch, epochs=config.epochs, metrics=metrics)
        stop = [r for r in (cb.on_epoch_end(report) for cb in callbacks) if r]
        if stop:
            return "stopped", stop[0], epoch
    return "completed", f"trained {config.epochs} epochs", epoch


def _run_epoch(run: _Run, callbacks: Sequence[Callback]) -> dict[str, float]:
    """One pass over the training data, then validation; one host sync for each."""
    run.compiled.train()
    # float() now: with a tensor lr (CUDA graphs) some torch versions return the live tensor.
    lr = float(run.scheduler.get_last_lr()[0])
    start = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    num_batches = len(run.loaders.train)
    seen = 0
    for batch, (x, y) in enumerate(run.loaders.train, start=1):
        for name, value in run.step(x, y).items():
            sums[name] = sums[name] + value if name in sums else value
        run.scheduler.step()
        seen += len(x)
        for callback in callbacks:
            callback.on_batch_end(batch, num_batches)
        interrupt.check()  # a Ctrl-C stops here, between two optimizer steps
    train_seconds = time.perf_counter() - start
    val = evaluate(run.compiled, run.loaders.val, run.precision, run.memory_format)
    return {
        **prefixed("train", _epoch_means(sums, num_batches)),
        **prefixed("val", val),
        "lr": lr,
        "epoch_seconds": time.perf_counter() - start,
        "images_per_second": seen / train_seconds if train_seconds > 0 else 0.0,
    }


def _epoch_means(sums: dict[str, torch.Tensor], num_batches: int) -> dict[str, float]:
    """The step's figures averaged over the epoch's batches, in one host sync."""
    if not sums:
        return {"loss": float("nan")}  # no batch ran: the loss check after the epoch stops the run
    names = list(sums)
    means = (torch.stack([sums[name] for name in names]) / num_batches).tolist()
    return dict(zip(names, means, strict=True))


def _finish_run(
    run: _Run, config: TrainConfig, *, resume: Checkpoint | None, best_checkpoint: Literal["each_improvement", "at_end"]
) -> dict[str, float]:
    """Load the best weights (the run's result), write the one checkpoint of a sweep trial, test once if asked."""
    best = run.best
    if config.evaluate_test and best.state is None and resume is not None:
        best.state = saved_best_weights(config)
    if best.state is not None:
        run.model.load_state_dict(best.state)  # the run's result is its best epoch
    if best_checkpoint == "at_end" and best.state is not None:
        run.saver.save(
            config.checkpoint_path,
            epoch=best.epoch,
            metrics=best.metrics,
            history=run.history,
            best=best,
            resumable=False,
        )
    if config.evaluate_test and best.state is not None:
        return prefixed("test", evaluate(run.compiled, run.loaders.test, run.precision, run.memory_format))
    return {}


def _check_data_matches(config: TrainConfig, info: DatasetInfo) -> None:
    model = config.model
    got = (info.num_classes, info.channels, info.image_size)
    want = (model.num_classes, model.in_chans, model.image_size)
    if got != want:
        raise HvitError(
            f"dataset {info.name} has {got[0]} classes, {got[1]} channels, {got[2]}px images but "
            f"the model expects {want[0]}, {want[1]}, {want[2]}: build the config with build_config"
        )
