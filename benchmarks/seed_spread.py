"""The seed-to-seed spread of val top-1 on real images: Fashion-MNIST on the CPU.

One config, one fixed train/val split (split seed 0), trained with N training seeds
(init, shuffles, augmentation, drop path), exactly as ``best --confirm`` retrains a
trial. Prints and saves each seed's best val top-1, their mean, standard deviation
and range: the noise any two configs of a study must beat to be told apart.

    python benchmarks/seed_spread.py --seeds 5 --epochs 5 --max-train-samples 10000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_harness import save_json

from hvit_sweeps.config import build_config
from hvit_sweeps.data import load_dataset
from hvit_sweeps.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-train-samples", type=int, default=10000)
    parser.add_argument("--max-eval-samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    layer = {
        "data.dataset": "fashion-mnist",
        "data.data_dir": "/usr/share/datasets/fashion-mnist",
        "data.download": False,
        "data.max_train_samples": args.max_train_samples,
        "data.max_eval_samples": args.max_eval_samples,
        "data.num_workers": 0,
        "data.batch_size": 128,
        "runtime.device": "cpu",
        "model.embed_dims": [32, 64],
        "model.depths": [1, 1],
        "model.num_heads": [2, 4],
        "epochs": args.epochs,
        "optim.warmup_epochs": 1,  # the default warm-up would take most of a short run
        "seed": 0,
    }
    base = build_config(layer)
    splits = load_dataset(base.data, seed=base.seed)  # the one split every seed trains on
    rows = []
    for seed in range(1, args.seeds + 1):
        config = build_config(layer, {"seed": seed})
        start = time.perf_counter()
        result = train(config, splits=splits)
        rows.append({"seed": seed, "val_acc1": result.best_metrics["val_acc1"], "seconds": time.perf_counter() - start})
        print(
            f"seed {seed}: best val top-1 {100 * rows[-1]['val_acc1']:.2f}% ({rows[-1]['seconds']:.0f} s)", flush=True
        )
    values = [100 * r["val_acc1"] for r in rows]
    summary = {
        "sizes": splits.sizes,
        "epochs": args.epochs,
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values),
        "range": max(values) - min(values),
        "rows": rows,
    }
    print(
        f"{len(values)} seeds on {splits.sizes}: mean {summary['mean']:.2f}%, sd {summary['sd']:.2f} points, "
        f"range {summary['range']:.2f} points"
    )
    save_json("seed-spread", summary)


if __name__ == "__main__":
    main()
