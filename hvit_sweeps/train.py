"""The training loop shared by ``hvit-sweep train`` and every sweep trial.

:func:`train` takes one validated :class:`~hvit_sweeps.config.TrainConfig` and a
list of :class:`Callback` objects. After each epoch it hands every callback an
:class:`EpochReport`; a callback that returns a reason stops the run early. That
is how an Optuna trial prunes and how tracking logs, with no second code path.

The step does no host work: losses and accuracy counts accumulate on the device
and are read once per epoch. Optionally the whole step (forward, backward,
clipping, AdamW) is captured once in a CUDA graph and replayed, which removes
the launch overhead that dominates a model this small.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hvit_sweeps import interrupt
from hvit_sweeps.callbacks import Callback, EpochReport, RunPlan, TrainResult  # re-exported: train()'s own types
from hvit_sweeps.checkpoint import Checkpoint, load_model, save_checkpoint
from hvit_sweeps.config import OptimConfig, RuntimeConfig, TrainConfig
from hvit_sweeps.cost import LATENCY_BATCH, CostMeter, measure_latency
from hvit_sweeps.data import (
    BatchLoader,
    DatasetInfo,
    DatasetSplits,
    Loaders,
    derive_seed,
    load_dataset,
    make_loaders,
)
from hvit_sweeps.errors import HvitError
from hvit_sweeps.model import build_model, count_flops, count_parameters

__all__ = [
    "Callback",
    "EpochReport",
    "Precision",
    "RunPlan",
    "TrainResult",
    "evaluate",
    "model_stats",
    "resolve_device",
    "resolve_runtime",
    "step_mode",
    "runtime_notes",
    "train",
]

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Precision:
    """The autocast setting of a run: ``dtype`` None means full fp32."""

    device_type: str
    dtype: torch.dtype | None

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig, device: torch.device) -> Precision:
        return _precision(resolve_runtime(runtime, device), device)

    @property
    def label(self) -> str:
        return "fp32" if self.dtype is None else f"{'bf16' if self.dtype == torch.bfloat16 else 'fp16'} autocast"

    @property
    def needs_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range.
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def _tell(callbacks: Sequence[Callback], phase: str) -> None:
    for callback in callbacks:
        callback.on_phase(phase)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable device is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HvitError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HvitError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise HvitError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


def resolve_runtime(runtime: RuntimeConfig, device: torch.device) -> RuntimeConfig:
    """``runtime`` with every "auto" switch decided for ``device``.

    On CUDA the fast path is the default: bf16 autocast and a CUDA-graphed step
    (eager where the step cannot be captured). Elsewhere fp32 eager: bf16 autocast
    ran 3.5-5.6x slower than fp32 on CPUs without AVX-512 BF16 (benchmarks/RESULTS.md).
    """
    amp = device.type == "cuda" if runtime.amp is None else runtime.amp
    resolved = runtime.model_copy(update={"amp": amp})
    graphs = runtime.cuda_graphs
    if graphs is None:
        graphs = _graphs_refusal(resolved, device) is None
    return resolved.model_copy(update={"cuda_graphs": graphs})


def _precision(runtime: RuntimeConfig, device: torch.device) -> Precision:
    """The precision of a resolved runtime."""
    if not runtime.amp:
        return Precision(device.type, None)
    return Precision(device.type, torch.bfloat16 if runtime.autocast_dtype == "bf16" else torch.float16)


def step_mode(runtime: RuntimeConfig, device: torch.device) -> str:
    """How the train step runs: "cuda-graph", "compile=MODE" or "eager"."""
    resolved = resolve_runtime(runtime, device)
    if resolved.cuda_graphs and _graphs_refusal(resolved, device) is None:
        return "cuda-graph"
    return "eager" if resolved.compile == "off" else f"compile={resolved.compile}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed the model's own randomness (drop path, dropout) for one epoch.

    With the loaders' per-epoch draws (``set_epoch``), epoch N of a resumed run
    sees the same batches and masks as epoch N of an uninterrupted one.
    """
    torch.manual_seed(derive_seed(seed, f"model epoch {epoch}"))


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
    step: StepFn
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    memory_format: torch.memory_format
    saver: _Saver
    history: list[dict[str, float]]
    best: _Best
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
    start_epoch, history, best = _restore_progress(model, config, resume, select)
    stats = model_stats(model, config)
    memory_format = torch.channels_last if config.runtime.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    use_graphs = step_mode(config.runtime, device) == "cuda-graph"
    optimizer = _make_optimizer(model, config.optim, device, capturable=use_graphs)
    scheduler = _make_schedule(optimizer, config.optim, len(loaders.train), config.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    if resume is not None and "optimizer" in resume.training_state:
        _restore_optimization(resume, optimizer, scheduler, scaler)
    compiled = model if config.runtime.compile == "off" else _compile(model, config.runtime.compile)
    step: StepFn = _make_step(compiled, optimizer, scaler, precision, config.optim, memory_format)
    if use_graphs:
        step = _GraphedStep(step, optimizer)
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
    saver = _Saver(model, config, list(splits.info.class_names), optimizer, scheduler, scaler)
    return _Run(model, compiled, loaders, step, scheduler, precision, memory_format, saver, history, best, plan)


def _restore_progress(
    model: nn.Module, config: TrainConfig, resume: Checkpoint | None, select: Literal["best", "last"]
) -> tuple[int, list[dict[str, float]], _Best]:
    """The first epoch to run, the history so far and the best epoch so far (a resumed run continues them)."""
    if resume is None:
        return 1, [], _Best(config.monitor_mode if select == "best" else "last")
    _check_resumable(config, resume)
    model.load_state_dict(load_model(resume).state_dict())
    history = list(resume.training_state.get("history", []))
    return resume.epoch + 1, history, _Best.restore(config.monitor_mode, resume.training_state.get("best", {}))


def _restore_optimization(
    resume: Checkpoint,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    optimizer.load_state_dict(resume.training_state["optimizer"])
    scheduler.load_state_dict(resume.training_state["scheduler"])
    scaler.load_state_dict(resume.training_state["scaler"])
    # The loaded lr belongs to the old run's length; recompute it for this one.
    scheduler.last_epoch -= 1
    scheduler.step()


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
        metrics = _run_epoch(
            run.compiled, run.loaders, run.step, run.scheduler, run.precision, run.memory_format, callbacks
        )
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


def _finish_run(
    run: _Run, config: TrainConfig, *, resume: Checkpoint | None, best_checkpoint: Literal["each_improvement", "at_end"]
) -> dict[str, float]:
    """Load the best weights (the run's result), write the one checkpoint of a sweep trial, test once if asked."""
    best = run.best
    if config.evaluate_test and best.state is None and resume is not None:
        best.state = _saved_best_weights(config)
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
        return _prefixed("test", evaluate(run.compiled, run.loaders.test, run.precision, run.memory_format))
    return {}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    precision: Precision,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy over every sample of ``loader``."""
    was_training = model.training
    model.eval()
    totals: torch.Tensor | None = None
    count = 0  # sample counts are known on the host; only sums of results live on the device
    for x, y in loader:
        with precision.autocast():
            logits = model(x.contiguous(memory_format=memory_format)).float()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(y[:, None])
        batch = torch.stack(
            [F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum().float(), hits.any(dim=1).sum().float()]
        )
        totals = batch if totals is None else totals + batch
        count += len(y)
        interrupt.check()
    model.train(was_training)
    if totals is None:
        raise HvitError("the evaluation split is empty: lower --val-split's effect or add data")
    loss, top1, top5 = totals.tolist()  # the one host sync of evaluation
    return {"loss": loss / count, "acc1": top1 / count, "acc5": top5 / count}


def _run_epoch(
    model: nn.Module,
    loaders: Any,
    step: StepFn,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    memory_format: torch.memory_format,
    callbacks: Sequence[Callback],
) -> dict[str, float]:
    """One pass over the training data, then validation; one host sync for each."""
    model.train()
    # float() now: with a tensor lr (CUDA graphs) some torch versions return the live tensor.
    lr = float(scheduler.get_last_lr()[0])
    start = time.perf_counter()
    loss_sum: torch.Tensor | None = None
    num_batches = len(loaders.train)
    seen = 0
    for batch, (x, y) in enumerate(loaders.train, start=1):
        loss = step(x, y)
        loss_sum = loss if loss_sum is None else loss_sum + loss
        scheduler.step()
        seen += len(x)
        for callback in callbacks:
            callback.on_batch_end(batch, num_batches)
        interrupt.check()  # a Ctrl-C stops here, between two optimizer steps
    train_loss = (loss_sum / num_batches).item() if loss_sum is not None else float("nan")
    train_seconds = time.perf_counter() - start
    val = evaluate(model, loaders.val, precision, memory_format)
    return {
        "train_loss": train_loss,
        **_prefixed("val", val),
        "lr": lr,
        "epoch_seconds": time.perf_counter() - start,
        "images_per_second": seen / train_seconds if train_seconds > 0 else 0.0,
    }


def _make_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    optim: OptimConfig,
    memory_format: torch.memory_format,
) -> StepFn:
    """Forward, backward, clip and AdamW for one batch; returns the detached loss."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            logits = model(x.contiguous(memory_format=memory_format))
        # Soft targets (mixup/cutmix) and hard labels share this loss.
        loss = F.cross_entropy(logits.float(), y, label_smoothing=optim.label_smoothing)
        scaler.scale(loss).backward()
        if optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            # foreach norm with no error check: no host sync, safe to capture.
            nn.utils.clip_grad_norm_(params, optim.grad_clip, foreach=True)
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    def eager_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        return step(x, y)

    eager_step.without_zero_grad = step  # type: ignore[attr-defined]
    return eager_step


class _GraphedStep:
    """Replays one CUDA graph of the whole train step after a few eager warm-ups.

    Capture needs static input buffers, a capturable optimizer with a tensor lr
    (the schedule then writes into that tensor) and gradients allocated inside the
    graph's memory pool, hence ``zero_grad(set_to_none=True)`` right before capture.
    """

    warmup_steps = 3

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer) -> None:
        self.step = step
        self.optimizer = optimizer
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.calls < self.warmup_steps:
            self.calls += 1
            # Warm-up on a side stream, as capture requires (cuBLAS handles, autograd state).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self._capture(x, y)
        assert self.static is not None and self.graph is not None
        static_x, static_y, static_loss = self.static
        static_x.copy_(x)
        static_y.copy_(y)
        self.graph.replay()
        return static_loss.clone()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        static_x, static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # "thread_local": the CPU loader's pin-memory thread allocates pinned buffers
        # (cudaHostAlloc) at any time; under the default "global" mode that call
        # would invalidate this capture. Nothing that thread does belongs in the graph.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_loss = self.step.without_zero_grad(static_x, static_y)  # type: ignore[attr-defined]
        self.graph, self.static = graph, (static_x, static_y, static_loss)


def runtime_notes(runtime: RuntimeConfig, device: torch.device) -> list[str]:
    """What a run on ``device`` will do differently from ``runtime``, or should warn about.

    ``train`` returns these with its result; ``run`` prints them once before a sweep.
    """
    resolved = resolve_runtime(runtime, device)
    precision = _precision(resolved, device)
    notes = []
    why = _graphs_refusal(resolved, device)
    if why and runtime.cuda_graphs:
        notes.append(f"--cuda-graphs: {why}; running eager steps instead")
    elif why and runtime.cuda_graphs is None and device.type == "cuda":
        notes.append(f"CUDA graphs (auto) are off: {why}; running eager steps")
    if device.type == "cpu" and precision.dtype == torch.float16:
        # Measured on this project's CPU runs (benchmarks/RESULTS.md), not assumed.
        notes.append("fp16 autocast on a CPU runs 13-35x slower than fp32: use --autocast-dtype bf16 or --no-amp")
    return notes


def _graphs_refusal(runtime: RuntimeConfig, device: torch.device) -> str | None:
    """Why this step cannot be captured: a graph needs CUDA, no loss scaler (it syncs), no second graph layer."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if _precision(runtime, device).needs_scaler:
        return "fp16's gradient scaler cannot be captured; use bf16"
    if runtime.compile != "off":
        return "skipped under --compile (reduce-overhead already graphs)"
    return None


def _make_optimizer(
    model: nn.Module, optim: OptimConfig, device: torch.device, *, capturable: bool
) -> torch.optim.AdamW:
    """AdamW without decay on norms, biases and position embeddings (the usual ViT rule)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith("pos_embed") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # A tensor lr lets the schedule change it without re-capturing a CUDA graph.
    lr: float | torch.Tensor = torch.tensor(optim.lr, device=device) if capturable else optim.lr
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=(optim.beta1, optim.beta2),
        fused=device.type == "cuda",
        capturable=capturable,
    )


def _make_schedule(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak lr, then cosine decay to ``min_lr_ratio`` of it."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, round(optim.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _compile(model: nn.Module, mode: str) -> nn.Module:
    return torch.compile(model, mode=None if mode == "default" else mode)  # type: ignore[return-value]


class _Best:
    """The best epoch so far by the monitored metric, with a copy of its weights."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] | None = None

    @classmethod
    def restore(cls, mode: str, saved: dict[str, Any]) -> _Best:
        best = cls(mode)
        best.epoch = int(saved.get("epoch", 0))
        best.metrics = dict(saved.get("metrics", {}))
        return best

    def update(self, epoch: int, metrics: dict[str, float], monitor: str, model: nn.Module) -> bool:
        value = metrics[monitor]
        if self.metrics and self.mode != "last":  # "last": a final model keeps its last epoch
            previous = self.metrics[monitor]
            if (value <= previous) if self.mode == "max" else (value >= previous):
                return False
        self.epoch, self.metrics = epoch, dict(metrics)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metrics": self.metrics}


@dataclass
class _Saver:
    """Writes checkpoints that carry everything ``--resume`` needs."""

    model: nn.Module
    config: TrainConfig
    class_names: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def save(
        self,
        path: Path | None,
        *,
        epoch: int,
        metrics: dict[str, float],
        history: list,
        best: _Best,
        resumable: bool = True,
    ) -> None:
        """Write the model as it is now; ``resumable=False`` leaves out the optimizer state (a third of the bytes)."""
        if path is None:
            return
        # The history is kept either way: a few numbers per epoch, and the curves need them.
        training_state: dict[str, Any] = {"history": history, "best": best.as_dict()}
        if resumable:
            training_state.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
            )
        save_checkpoint(
            path,
            model=self.model,
            config=self.config,
            epoch=epoch,
            metrics=metrics,
            class_names=self.class_names,
            training_state=training_state,
        )


def _saved_best_weights(config: TrainConfig) -> dict[str, torch.Tensor] | None:
    """After a resume that never beat the saved best, the best weights are on disk."""
    from hvit_sweeps.checkpoint import load_checkpoint

    path = config.checkpoint_path
    return load_checkpoint(path).model_state if path is not None and path.is_file() else None


def _check_data_matches(config: TrainConfig, info: DatasetInfo) -> None:
    model = config.model
    got = (info.num_classes, info.channels, info.image_size)
    want = (model.num_classes, model.in_chans, model.image_size)
    if got != want:
        raise HvitError(
            f"dataset {info.name} has {got[0]} classes, {got[1]} channels, {got[2]}px images but "
            f"the model expects {want[0]}, {want[1]}, {want[2]}: build the config with build_config"
        )


def _check_resumable(config: TrainConfig, checkpoint: Checkpoint) -> None:
    if checkpoint.config.model != config.model:
        raise HvitError(
            f"--resume {checkpoint.path}: it holds a different model "
            f"({checkpoint.config.model.embed_dims} dims, {checkpoint.config.model.depths} depths); "
            "drop the model flags to continue it as saved"
        )
    if checkpoint.epoch >= config.epochs:
        raise HvitError(
            f"--resume {checkpoint.path}: it already trained {checkpoint.epoch} epochs; "
            f"pass --epochs greater than {checkpoint.epoch}"
        )
    if "optimizer" not in checkpoint.training_state:
        raise HvitError(f"--resume {checkpoint.path}: it has no optimizer state (an exported model)")


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def evaluate_checkpoint(
    checkpoint: Checkpoint,
    *,
    overrides: dict[str, Any] | None = None,
    splits: Sequence[str] = ("val", "test"),
) -> tuple[dict[str, dict[str, float]], DatasetSplits]:
    """Re-create a checkpoint's data split and evaluate its weights on ``splits``.

    The validation split is rebuilt from the saved seed and ``val_split``, so the
    val metrics reproduce the ones recorded when the checkpoint was chosen.

    Args:
        overrides: Config paths to change first, such as ``data.data_dir`` or ``runtime.device``.
    """
    from hvit_sweeps.config import build_config

    config = build_config(
        checkpoint.config.model_dump(mode="json"), overrides or {}, source=f"eval of {checkpoint.path}"
    )
    if config.model != checkpoint.config.model:
        raise HvitError(f"{checkpoint.path}: the dataset given now does not fit the saved model")
    device = resolve_device(config.runtime.device)
    data = load_dataset(config.data, seed=config.seed)
    loaders = make_loaders(data, config.data, device=device, seed=config.seed)
    model = load_model(checkpoint).to(device)
    precision = Precision.from_runtime(config.runtime, device)
    results = {name: evaluate(model, getattr(loaders, name), precision) for name in splits}
    return results, data
