"""CUDA-graph replay against eager: the same losses to within bf16 tolerance.

Trains the same model from the same seed twice, once eager and once with the
whole step captured in a CUDA graph, and compares the per-epoch training and
validation losses. Dropout and stochastic depth are off so that both runs draw
the same random numbers (data order and augmentation use the loader's own
generators, shared by both). Needs a CUDA GPU; on a CPU it says so and exits.

    python benchmarks/graph_parity.py [--epochs 3] [--dtype bf16|fp32]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from hvit_sweeps.config import build_config
from hvit_sweeps.train import train

# bf16 keeps 8 bits of mantissa; two runs that differ only in kernel order and
# launch timing agree to a few parts in a thousand on an averaged loss.
TOLERANCE = {"bf16": 2e-2, "fp32": 1e-3}


def losses(*, graphs: bool, epochs: int, dtype: str) -> list[dict[str, float]]:
    config = build_config(
        {
            "data.dataset": "synthetic",
            "data.max_train_samples": 20_480,
            "data.max_eval_samples": 2_048,
            "data.batch_size": 512,
            "data.loader": "device",
            "model.drop_path_rate": 0.0,
            "model.dropout": 0.0,
            "runtime.device": "cuda",
            "runtime.amp": dtype != "fp32",
            "runtime.autocast_dtype": "bf16",
            "runtime.cuda_graphs": graphs,
            "epochs": epochs,
        },
        source="graph parity",
    )
    result = train(config)
    assert not result.notes, result.notes  # a fallback to eager would make the comparison vacuous
    return [{k: h[k] for k in ("train_loss", "val_loss")} for h in result.history]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="bf16")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("graph parity needs a CUDA GPU; none is visible here (nothing measured)")
        return 0
    eager = losses(graphs=False, epochs=args.epochs, dtype=args.dtype)
    graphed = losses(graphs=True, epochs=args.epochs, dtype=args.dtype)
    worst = max(abs(g[k] - e[k]) / abs(e[k]) for e, g in zip(eager, graphed, strict=False) for k in e)
    passed = worst <= TOLERANCE[args.dtype]
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "dtype": args.dtype,
                "eager": eager,
                "graphed": graphed,
                "worst_relative_difference": worst,
                "tolerance": TOLERANCE[args.dtype],
                "passed": passed,
            },
            indent=2,
        )
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
