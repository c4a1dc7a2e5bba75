"""What one training run cost, measured: wall and device seconds, peak memory, throughput, latency.

:class:`CostMeter` starts with :func:`~hvit_sweeps.train.train` and is read once
at its end, so every run (a pruned trial's included) gets the same figures:

* ``wall_seconds``: from the start of ``train`` to its end, the latency probe excluded;
* ``device_seconds``: on CUDA (and MPS), wall seconds times the one device a run uses; on a CPU,
  the process's CPU time (user + system, all threads) over the same span, which is
  what the run took from the machine. :data:`DEVICE_BASIS` names which, per device;
* ``peak_memory_mb``: CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not
  the CUDA context); CPU: the process's peak resident set size, reset at the start
  of the run where Linux allows it (``/proc/self/clear_refs``), else the process's
  lifetime peak from ``getrusage``;
* ``train_images_per_second``: the mean of the epochs' training throughput;
* ``latency_ms``: eval-mode forward time (eager, at the run's precision) of one batch of :data:`LATENCY_BATCH`
  validation images, the median of :data:`LATENCY_ITERS` timed calls after a warm-up.

Torch is imported inside the measuring functions, so the names here serve the
commands that only read results.
"""

from __future__ import annotations

import re
import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DEVICE_BASIS",
    "LATENCY_BATCH",
    "LATENCY_ITERS",
    "CostMeter",
    "device_basis",
    "format_cost",
    "measure_latency",
]

LATENCY_BATCH = 32  # images per timed forward: a small serving batch, the same for every trial
LATENCY_WARMUP = 1
LATENCY_ITERS = 3  # a median of 3 after 1 warm-up: 4 forwards, about 1% of a 2000-image, 2-epoch trial
DEVICE_BASIS = {
    "cuda": "wall seconds x 1 GPU",
    "mps": "wall seconds x 1 GPU",
    "cpu": "process CPU time (user + system, all threads)",
}
_MB = 2**20
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def device_basis(device_type: str) -> str:
    """How ``device_seconds`` is counted on a device type."""
    return DEVICE_BASIS.get(device_type, DEVICE_BASIS["cpu"])


@dataclass
class CostMeter:
    """Started when a run starts; :meth:`finish` returns the run's cost figures."""

    device_type: str
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    rss_reset: bool = False

    @classmethod
    def start(cls, device: torch.device) -> CostMeter:
        if device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        meter = cls(device.type, rss_reset=device.type != "cuda" and _reset_peak_rss())
        meter.started, meter.cpu_started = time.perf_counter(), time.process_time()
        return meter

    def finish(self, history: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The run's figures but latency: call once, after training and before the latency probe."""
        wall = time.perf_counter() - self.started
        device_seconds = time.process_time() - self.cpu_started if self.device_type == "cpu" else wall
        speeds = [h["images_per_second"] for h in history if "images_per_second" in h]
        return {
            "wall_seconds": wall,
            "device_seconds": device_seconds,
            "peak_memory_mb": self._peak_bytes() / _MB,
            "train_images_per_second": statistics.fmean(speeds) if speeds else 0.0,
        }

    def _peak_bytes(self) -> float:
        if self.device_type == "cuda":
            import torch

            return float(torch.cuda.max_memory_allocated())
        if self.rss_reset:
            peak = _status_kib("VmHWM")
            if peak is not None:
                return peak * 1024.0
        # ru_maxrss: KiB on Linux, bytes on macOS; the process's peak since it started.
        scale = 1 if sys.platform == "darwin" else 1024
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def format_cost(cost: Mapping[str, float] | None) -> str:
    """A trial's cost in one short cell: device seconds, peak memory, latency."""
    if not cost:
        return ""
    parts = [f"{cost['device_seconds']:.1f} dev-s", f"{cost['peak_memory_mb']:.0f} MB"]
    if "latency_ms" in cost:
        parts.append(f"{cost['latency_ms']:.1f} ms/{int(cost.get('latency_batch', LATENCY_BATCH))}")
    return ", ".join(parts)


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0: write 5 to clear_refs), so a run sees only its own."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _status_kib(key: str) -> int | None:
    try:
        found = re.search(rf"^{key}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def measure_latency(
    model: nn.Module,
    images: torch.Tensor,
    *,
    autocast: Any,
    memory_format: torch.memory_format,
    iters: int = LATENCY_ITERS,
) -> float:
    """Median milliseconds of one eval-mode forward over ``images``, after a warm-up.

    Args:
        autocast: A callable returning the run's autocast context (``Precision.autocast``).
    """
    import torch

    was_training = model.training
    model.eval()
    x = images.contiguous(memory_format=memory_format)
    cuda = x.device.type == "cuda"
    times = []
    with torch.no_grad():
        for i in range(LATENCY_WARMUP + iters):
            if cuda:
                torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            with autocast():
                model(x)
            if cuda:
                torch.cuda.synchronize(x.device)
            if i >= LATENCY_WARMUP:
                times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000.0 * statistics.median(times)
