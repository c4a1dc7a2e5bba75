"""Where and how a run executes: device, precision, step mode, seeding, compile.

Every "auto" switch of :class:`~hvit_sweeps.config.RuntimeConfig` is decided here
for one device, so ``train``, ``run`` and the benchmarks agree on what a run does.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hvit_sweeps.config import RuntimeConfig
from hvit_sweeps.data import derive_seed
from hvit_sweeps.errors import HvitError

__all__ = [
    "Precision",
    "compile_model",
    "graphs_refusal",
    "resolve_device",
    "resolve_runtime",
    "runtime_notes",
    "seed_epoch",
    "seed_everything",
    "step_mode",
]


@dataclass(frozen=True)
class Precision:
    """The autocast setting of a run: ``dtype`` None means full fp32."""

    device_type: str
    dtype: torch.dtype | None

    @classmethod
    def from_runtime(cls, runtime: RuntimeConfig, device: torch.device) -> Precision:
        return cls.of_resolved(resolve_runtime(runtime, device), device)

    @classmethod
    def of_resolved(cls, runtime: RuntimeConfig, device: torch.device) -> Precision:
        """The precision of a runtime whose ``amp`` is already decided."""
        if not runtime.amp:
            return cls(device.type, None)
        return cls(device.type, torch.bfloat16 if runtime.autocast_dtype == "bf16" else torch.float16)

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
        graphs = graphs_refusal(resolved, device) is None
    return resolved.model_copy(update={"cuda_graphs": graphs})


def step_mode(runtime: RuntimeConfig, device: torch.device) -> str:
    """How the train step runs: "cuda-graph", "compile=MODE" or "eager"."""
    resolved = resolve_runtime(runtime, device)
    if resolved.cuda_graphs and graphs_refusal(resolved, device) is None:
        return "cuda-graph"
    return "eager" if resolved.compile == "off" else f"compile={resolved.compile}"


def runtime_notes(runtime: RuntimeConfig, device: torch.device) -> list[str]:
    """What a run on ``device`` will do differently from ``runtime``, or should warn about.

    ``train`` returns these with its result; ``run`` prints them once before a sweep.
    """
    resolved = resolve_runtime(runtime, device)
    precision = Precision.of_resolved(resolved, device)
    notes = []
    why = graphs_refusal(resolved, device)
    if why and runtime.cuda_graphs:
        notes.append(f"--cuda-graphs: {why}; running eager steps instead")
    elif why and runtime.cuda_graphs is None and device.type == "cuda":
        notes.append(f"CUDA graphs (auto) are off: {why}; running eager steps")
    if device.type == "cpu" and precision.dtype == torch.float16:
        # Measured on this project's CPU runs (benchmarks/RESULTS.md), not assumed.
        notes.append("fp16 autocast on a CPU runs 13-35x slower than fp32: use --autocast-dtype bf16 or --no-amp")
    return notes


def graphs_refusal(runtime: RuntimeConfig, device: torch.device) -> str | None:
    """Why this step cannot be captured: a graph needs CUDA, no loss scaler (it syncs), no second graph layer."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device.type}"
    if Precision.of_resolved(runtime, device).needs_scaler:
        return "fp16's gradient scaler cannot be captured; use bf16"
    if runtime.compile != "off":
        return "skipped under --compile (reduce-overhead already graphs)"
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed the model's own randomness (drop path, dropout) for one epoch.

    With the loaders' per-epoch draws (``set_epoch``), epoch N of a resumed run
    sees the same batches and masks as epoch N of an uninterrupted one.
    """
    torch.manual_seed(derive_seed(seed, f"model epoch {epoch}"))


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """``torch.compile`` of ``model``; ``mode`` "default" is torch's own default."""
    compiled = torch.compile(model, mode=None if mode == "default" else mode)
    # torch types the result as a plain callable; for a module it is an OptimizedModule.
    if not isinstance(compiled, nn.Module):
        raise TypeError(f"torch.compile returned {type(compiled).__name__}, not a module")
    return compiled
