"""What train_acc1 costs the train step: the step with its figures against the step with the loss alone.

The step returns its batch's figures (``loss``, ``acc1``) as device tensors; the loop
averages them per epoch. Measured in one process, rounds alternating the two, on the
default model and batch size with synthetic tensors; the baseline is the same
:class:`~hvit_sweeps.steps.EagerStep` with the accuracy left out.

    python benchmarks/step_figures.py [--steps 30] [--rounds 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_harness import cpu_model, save_json

from hvit_sweeps import steps
from hvit_sweeps.config import build_config
from hvit_sweeps.model import build_model
from hvit_sweeps.optim import make_optimizer
from hvit_sweeps.runtime import Precision, resolve_device


def _loss_only(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.new_zeros(())  # the baseline: no argmax, no compare


def time_steps(step: steps.EagerStep, x: torch.Tensor, y: torch.Tensor, count: int, device: torch.device) -> float:
    """Seconds per step over ``count`` steps, synchronised once at the end as the loop does."""
    start = time.perf_counter()
    for _ in range(count):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round [30]")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, alternating with and without acc1 [7]")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    config = build_config({"runtime.device": args.device, "data.dataset": "synthetic"})
    device = resolve_device(config.runtime.device)
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    optimizer = make_optimizer(model, config.optim, device, capturable=False)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step = steps.EagerStep(
        model, optimizer, scaler, Precision(device.type, None), config.optim, torch.contiguous_format
    )
    batch = config.data.batch_size
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, config.model.num_classes, (batch,), device=device)

    top1 = steps._top1
    time_steps(step, x, y, args.steps, device)  # warm-up
    timed: dict[str, list[float]] = {"with acc1": [], "loss only": []}
    for _ in range(args.rounds):
        for name in timed:
            steps._top1 = top1 if name == "with acc1" else _loss_only
            timed[name].append(time_steps(step, x, y, args.steps, device))
    steps._top1 = top1

    base = statistics.median(timed["loss only"])
    rows = {
        name: {"median_ms": 1e3 * statistics.median(v), "ratio": statistics.median(v) / base}
        for name, v in timed.items()
    }
    for name, row in rows.items():
        print(f"{name:10s} {row['median_ms']:8.2f} ms/step  {row['ratio']:.3f}x of loss only")
    save_json(
        f"step-figures-{device.type}",
        {"device": cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(), "batch": batch,
         "steps": args.steps, "rounds": args.rounds, "rows": rows, "raw_s": timed},
    )  # fmt: skip


if __name__ == "__main__":
    main()
