"""What a benchmark run measures: the axes of the train section, a :class:`Case` on them, and the :class:`Profile`s.

A profile sizes one run (``cpu`` fits a laptop, ``gpu`` is the issue's setting); the
``*-dry`` ones run a GPU plan's plumbing on the CPU with tiny sizes (``gpu_all.py --cpu-dry-run``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "small": {"model.embed_dims": [64, 128, 256], "model.depths": [2, 2, 2], "model.num_heads": [2, 4, 8]},
    "base": {"model.embed_dims": [96, 192, 384], "model.depths": [2, 4, 2], "model.num_heads": [3, 6, 12]},
}
# Not a train-section size (SIZES is its axis): the tests' and dry runs' concurrency and timeline
# workers, small enough to train in seconds on a loaded 2-core machine.
TINY = {"model.embed_dims": [16, 32], "model.depths": [1, 1], "model.num_heads": [1, 2]}
PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {"runtime.amp": False},
    "bf16": {"runtime.amp": True, "runtime.autocast_dtype": "bf16"},
    "fp16": {"runtime.amp": True, "runtime.autocast_dtype": "fp16"},
}
MODES: dict[str, dict[str, Any]] = {
    "eager": {"runtime.compile": "off", "runtime.cuda_graphs": False},
    "compile=default": {"runtime.compile": "default", "runtime.cuda_graphs": False},
    "compile=reduce-overhead": {"runtime.compile": "reduce-overhead", "runtime.cuda_graphs": False},
    "cuda_graphs": {"runtime.compile": "off", "runtime.cuda_graphs": True},
}
LOADERS = ("cpu", "device")
# -- profiles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    size: str
    precision: str
    loader: str
    mode: str

    @property
    def label(self) -> str:
        return f"{self.size} {self.precision} loader={self.loader} {self.mode}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """``size/precision/loader/mode``, e.g. ``small/bf16/device/cuda_graphs``."""
        parts = text.strip().split("/")
        choices = (SIZES, PRECISIONS, LOADERS, MODES)
        if len(parts) != 4 or any(part not in options for part, options in zip(parts, choices, strict=False)):
            raise ValueError(f"{text!r}: use size/precision/loader/mode from {'/'.join('|'.join(c) for c in choices)}")
        return cls(*parts)


def parse_cases(text: str) -> tuple[Case, ...]:
    return tuple(Case.parse(item) for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run; ``cpu`` fits a laptop, ``gpu`` is the issue's setting.

    ``train_samples`` is the train pool before the 10% validation split, per
    (size, precision): on CPU, autocast is far slower than fp32, so it gets fewer images.
    """

    name: str
    device: str
    batch_size: int
    epochs: int
    num_workers: int
    train_samples: dict[tuple[str, str], int]
    eval_samples: int | None  # None: the full split (synthetic: 10k test, val 10% of 50k train)
    concurrency: tuple[int, ...]
    throughput_modes: tuple[str, ...]
    throughput_precision: str
    throughput_samples: int
    sweep_trials: int
    sweep_samples: int | None  # None: the whole train pool (synthetic: 50k, CIFAR-100's size)
    trials_per_gpu: int = 4
    repeats: int = 1
    plan: str = ""  # "cpu" or "gpu": which cases, sweep variants and studies; "" follows the device
    cases: tuple[Case, ...] = ()  # train: only these, in this order (empty: every combination, skip rules apply)
    wall_variants: tuple[str, ...] = ("naive", "graphs", "per-gpu")  # gpu plan: see sweep_variants
    sweep_max_epochs: int = 20  # gpu plan sweep-wall; depth-width.toml's own
    tracking_epochs: int = 10  # gpu plan tracking-overhead
    throughput_epochs: int = 0  # sweep-throughput epochs per process; 0: epochs + 1
    throughput_size: str = "small"  # a SIZES name, or "tiny" (TINY)
    timeline_size: str = "small"  # trial-timeline's fixed architecture (SIZES name or "tiny")
    timeline_trials: int = 3
    timeline_epochs: int = 12  # ~0.5 s GPU epochs: trials of realistic length (issue 11: ~7 s), not 1 s ones
    headline_naive_s: float = 90.0  # sweep-headline: seconds kept for the naive baseline's rate

    @property
    def gpu_plan(self) -> bool:
        return (self.plan or ("cpu" if self.device == "cpu" else "gpu")) == "gpu"


def _samples(fp32: dict[str, int], bf16: dict[str, int], fp16: dict[str, int]) -> dict[tuple[str, str], int]:
    table = {"fp32": fp32, "bf16": bf16, "fp16": fp16}
    return {(size, precision): counts[size] for precision, counts in table.items() for size in SIZES}


PROFILES = {
    "cpu": Profile(
        name="cpu",
        device="cpu",
        batch_size=64,
        epochs=3,
        num_workers=2,
        train_samples=_samples({"small": 1024, "base": 512}, {"small": 512, "base": 256}, {"small": 384, "base": 256}),
        eval_samples=256,
        concurrency=(1, 2),
        throughput_modes=("eager",),
        throughput_precision="fp32",
        throughput_samples=1024,
        sweep_trials=6,
        sweep_samples=512,
    ),
    "gpu": Profile(
        name="gpu",
        device="cuda",
        batch_size=512,
        epochs=4,
        num_workers=8,
        train_samples=_samples(*({"small": 25_600, "base": 25_600},) * 3),
        eval_samples=5_000,
        concurrency=(1, 2, 4, 8),
        throughput_modes=("eager", "cuda_graphs"),
        throughput_precision="bf16",
        throughput_samples=25_600,
        sweep_trials=16,
        sweep_samples=20_000,
    ),
}
# What fits one device command of about 8 minutes (benchmarks/gpu_all.py), most needed first:
# the targets are about the small model; base gets eager vs graphs, without its own
# fp32 loader=cpu baseline (so no ratio column), only if the time box leaves room.
PROFILES["gpu-quick"] = replace(
    PROFILES["gpu"],
    name="gpu-quick",
    cases=parse_cases(
        "small/fp32/cpu/eager,small/bf16/device/eager,small/bf16/device/cuda_graphs,"
        "small/bf16/device/compile=reduce-overhead,base/bf16/device/eager,base/bf16/device/cuda_graphs"
    ),
    throughput_modes=("cuda_graphs", "eager"),
    throughput_epochs=3,
    sweep_trials=8,
    wall_variants=("naive", "per-gpu"),
)
# gpu-quick's plan on the CPU with tiny sizes: proves gpu_all.py's plumbing without a GPU.
PROFILES["gpu-dry"] = replace(
    PROFILES["gpu-quick"],
    name="gpu-dry",
    device="cpu",
    plan="gpu",
    batch_size=32,
    epochs=2,
    num_workers=1,
    train_samples=_samples(*({"small": 256, "base": 128},) * 3),
    eval_samples=64,
    cases=parse_cases(
        "small/fp32/cpu/eager,small/bf16/device/eager,small/bf16/device/cuda_graphs,base/bf16/device/eager"
    ),
    concurrency=(1, 2),
    throughput_samples=256,
    throughput_epochs=2,
    sweep_trials=3,
    sweep_samples=256,
    trials_per_gpu=2,
    sweep_max_epochs=3,
    tracking_epochs=2,
    throughput_size="tiny",
    timeline_size="tiny",
    timeline_trials=2,
    timeline_epochs=3,
    headline_naive_s=40.0,
)
# The CPU parts of issue 11's bench on a 2-core machine: concurrency K=1, 2 and the timeline, tiny model.
PROFILES["cpu-tiny"] = replace(
    PROFILES["cpu"],
    name="cpu-tiny",
    throughput_size="tiny",
    throughput_samples=4096,
    throughput_epochs=4,
    timeline_size="tiny",
    timeline_trials=3,
    timeline_epochs=3,
    sweep_samples=512,
    eval_samples=128,
)
# The headline of issue 11: the 50-trial depth-width study on synthetic data of CIFAR-100 size
# (50k train of which 10% val, 10k test) on the new defaults, and the naive baseline's rate.
PROFILES["gpu-headline"] = replace(
    PROFILES["gpu-quick"],
    name="gpu-headline",
    sweep_trials=50,
    sweep_samples=None,
    eval_samples=None,
    concurrency=(1, 4),
    throughput_modes=("cuda_graphs",),
    throughput_epochs=6,
)
# gpu-headline's plan on the CPU: the dry run of benchmarks/gpu/run_all.sh.
PROFILES["gpu-headline-dry"] = replace(
    PROFILES["gpu-dry"],
    name="gpu-headline-dry",
    sweep_trials=4,
    sweep_samples=256,
    eval_samples=64,
    concurrency=(1, 2),
    throughput_modes=("eager",),
    throughput_samples=256,
    throughput_epochs=3,
    sweep_max_epochs=2,
    throughput_precision="fp32",
)
