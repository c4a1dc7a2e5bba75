"""Training throughput on a CPU: `train`'s loader settings against a bare PyTorch loop, alternated in one run.

    python benchmarks/cpu_loader.py [--rounds 2] [--samples 2048] [--epochs 2]

A small model (dims 32,64, depths 1,1, heads 1,2) on synthetic data. Cases:

- ``default``: ``train`` with the config defaults (on a CPU: ``loader=auto``);
- ``cpu-workers``: ``loader=cpu``, ``num_workers=2``, ``augment=basic`` (the old CPU default:
  per-image augmentation in DataLoader worker processes);
- ``cpu-noaug-0``: ``loader=cpu``, ``augment=none``, ``num_workers=0``;
- ``device``: ``loader=device`` (whole split in memory, batched augmentation, no workers);
- ``bare``: a plain loop over pre-built tensors: the same model, AdamW, cross-entropy, batch 128.

Each figure is train images per second over the last epoch (train's own ``images_per_second``);
the bare loop is timed over as many images. Ratios are against ``bare`` of the same round.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvit_sweeps.config import build_config
from hvit_sweeps.model import build_model
from hvit_sweeps.train import train

MODEL = {"model.embed_dims": [32, 64], "model.depths": [1, 1], "model.num_heads": [1, 2], "model.patch_size": 4}
CASES: dict[str, dict[str, Any]] = {
    "default": {},  # this tree's defaults
    "cpu-workers": {"data.loader": "cpu", "data.num_workers": 2, "data.augment": "basic"},
    "cpu-noaug-0": {"data.loader": "cpu", "data.num_workers": 0, "data.augment": "none"},
    "device": {"data.loader": "device"},
}


def base(samples: int, epochs: int) -> dict[str, Any]:
    return {
        **MODEL,
        "data.dataset": "synthetic",
        "data.max_train_samples": samples,
        "data.max_eval_samples": 128,
        "data.batch_size": 128,
        "epochs": epochs,
        "runtime.device": "cpu",
    }


def train_rate(layer: dict[str, Any], samples: int, epochs: int) -> float:
    config = build_config(base(samples, epochs), layer)
    result = train(config)
    return float(result.history[-1]["images_per_second"])


def bare_rate(samples: int, epochs: int) -> float:
    config = build_config(base(samples, epochs))
    model = build_model(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(samples, 3, 32, 32)
    labels = torch.randint(0, config.model.num_classes, (samples,))
    model.train()
    rate = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(0, samples - 127, 128):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(images[i : i + 128]), labels[i : i + 128]).backward()
            optimizer.step()
        rate = (samples // 128 * 128) / (time.perf_counter() - start)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cpu_loader.json"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rounds = []
    for number in range(args.rounds):
        figures = {"bare": bare_rate(args.samples, args.epochs)}
        for name, layer in CASES.items():
            figures[name] = train_rate(layer, args.samples, args.epochs)
        ratios = {name: round(value / figures["bare"], 2) for name, value in figures.items()}
        print(f"round {number + 1}: img/s", {k: round(v) for k, v in figures.items()}, "vs bare", ratios, flush=True)
        rounds.append({"images_per_second": figures, "vs_bare": ratios})
    # The best of the rounds: on a shared machine the slow figures measure the neighbours.
    best = {name: max(r["images_per_second"][name] for r in rounds) for name in rounds[0]["images_per_second"]}
    print("best of rounds: img/s", {k: round(v) for k, v in best.items()},
          "vs bare", {k: round(v / best["bare"], 2) for k, v in best.items()}, flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": rounds, "best": best}, indent=2))


if __name__ == "__main__":
    main()
