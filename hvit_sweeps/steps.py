"""The train step: forward, backward, clipping and AdamW for one batch.

Two kinds share one interface (:class:`Step`): :class:`EagerStep` runs the step
as written; :class:`GraphedStep` captures it once in a CUDA graph and replays it,
which removes the launch overhead that dominates a model this small. Neither
does host work: each returns the batch's figures (its loss, ...) as detached device
tensors, which the loop averages over the epoch and reports as ``train_<name>``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hvit_sweeps.config import OptimConfig
from hvit_sweeps.runtime import Precision

__all__ = ["EagerStep", "GraphedStep", "Step", "make_step"]


# A batch's figures by name, each a 0-d tensor still on the device (no host sync per step).
StepFigures = dict[str, torch.Tensor]


class Step(Protocol):
    """One optimizer step on the batch ``(x, y)``; returns the batch's figures."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> StepFigures: ...


class EagerStep:
    """Forward, backward, clip and AdamW for one batch; returns the batch's detached figures."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        precision: Precision,
        optim: OptimConfig,
        memory_format: torch.memory_format,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.precision = precision
        self.optim = optim
        self.memory_format = memory_format
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> StepFigures:
        self.optimizer.zero_grad(set_to_none=True)
        return self.update(x, y)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> StepFigures:
        """The step without clearing the gradients first: what a CUDA graph captures."""
        with self.precision.autocast():
            logits = self.model(x.contiguous(memory_format=self.memory_format))
        # Soft targets (mixup/cutmix) and hard labels share this loss.
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.optim.label_smoothing)
        self.scaler.scale(loss).backward()
        if self.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            # foreach norm with no error check: no host sync, safe to capture.
            nn.utils.clip_grad_norm_(self.params, self.optim.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.detach(), "acc1": _top1(logits.detach(), y)}


def _top1(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The batch's top-1 accuracy; a soft target (mixup/cutmix) counts as its largest class."""
    labels = y.argmax(dim=1) if y.ndim == 2 else y
    return (logits.argmax(dim=1) == labels).float().mean()


class GraphedStep:
    """Replays one CUDA graph of the whole train step after a few eager warm-ups.

    Capture needs static input buffers, a capturable optimizer with a tensor lr
    (the schedule then writes into that tensor) and gradients allocated inside the
    graph's memory pool, hence ``zero_grad(set_to_none=True)`` right before capture.
    """

    warmup_steps = 3

    def __init__(self, step: EagerStep) -> None:
        self.step = step
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, StepFigures] | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> StepFigures:
        if self.graph is None and self.calls < self.warmup_steps:
            self.calls += 1
            # Warm-up on a side stream, as capture requires (cuBLAS handles, autograd state).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                figures = self.step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return figures
        if self.graph is None:
            self._capture(x, y)
        assert self.static is not None and self.graph is not None
        static_x, static_y, static_figures = self.static
        static_x.copy_(x)
        static_y.copy_(y)
        self.graph.replay()
        return {name: value.clone() for name, value in static_figures.items()}

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        static_x, static_y = x.clone(), y.clone()
        self.step.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # "thread_local": the CPU loader's pin-memory thread allocates pinned buffers
        # (cudaHostAlloc) at any time; under the default "global" mode that call
        # would invalidate this capture. Nothing that thread does belongs in the graph.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_figures = self.step.update(static_x, static_y)
        self.graph, self.static = graph, (static_x, static_y, static_figures)


def make_step(eager: EagerStep, *, graphed: bool) -> Step:
    """The step a run uses: ``eager`` itself, or ``eager`` captured in a CUDA graph."""
    return GraphedStep(eager) if graphed else eager
