"""Proof of learning on real images: the default HViT, and a short sweep, on Fashion-MNIST.

Fashion-MNIST (Xiao et al., 2017) is read from Debian's ``dataset-fashion-mnist``
files under /usr/share/datasets/fashion-mnist (60k train, 10k test, 28x28 grey).

* ``train``: the default model (ModelConfig defaults) through the product's
  ``train()``, best-by-validation weights evaluated on the full 10k test set.
* ``sweep``: ``hvit-sweep run`` on a study file written to benchmarks/out/ (the
  smoke study on fashion-mnist, with a bigger budget and median pruning), then
  ``hvit-sweep best --export`` and ``hvit-sweep eval`` of the winner on the test set.
* ``probe``: one epoch's speed, to size the other two to a time budget.

Each part writes a JSON record to benchmarks/out/ and prints a summary.

Usage::

    python benchmarks/learn_fashion.py probe
    python benchmarks/learn_fashion.py train --epochs 8
    python benchmarks/learn_fashion.py sweep --trials 8 --max-epochs 8 --max-train-samples 12000
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "out"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_harness import cpu_model, to_toml

# fp32 on CPU, as the smoke study: autocast gave no speed-up on the CPU measured (bench.py: bf16
# 0.85-1.08x of fp32, fp16 0.06x), and fp32 keeps the CPU figures comparable with the bench.
CPU_RUNTIME = {"runtime.device": "cpu", "runtime.amp": False}


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": gpu or cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
        "date": dt.date.today().isoformat(),
        "loadavg": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def runtime_layer() -> dict[str, Any]:
    import torch

    return {} if torch.cuda.is_available() else dict(CPU_RUNTIME)


def save(name: str, record: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{platform.node()}-{dt.datetime.now():%Y-%m-%d-%H%M%S}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {path}", flush=True)
    return path


# -- train: the default model -----------------------------------------------------------


def epoch_printer() -> Any:
    from hvit_sweeps.callbacks import Callback, EpochReport

    class Printer(Callback):
        """One line per epoch, so a background run can be followed in its log."""

        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, report: EpochReport) -> str | None:
            m = report.metrics
            print(
                f"epoch {report.epoch}/{report.epochs}: train_loss {m['train_loss']:.4f} val_acc1 {m['val_acc1']:.4f} "
                f"{m['images_per_second']:.0f} img/s, {m['epoch_seconds']:.1f}s (elapsed {time.perf_counter() - self.start:.0f}s)",
                flush=True,
            )
            return None

    return Printer()


def train_default(
    *,
    epochs: int,
    max_train_samples: int | None,
    loader: str,
    name: str = "fashion-train",
    extra: dict[str, Any] | None = None,
    json_path: Path | None = None,
) -> dict[str, Any]:
    """The default model through train(); ``extra``: more config paths (batch size, lr, data dir, eval cap).

    ``json_path``: also write the record there (gpu_all.py's fashion.json).
    """
    from hvit_sweeps.config import build_config, flatten_config
    from hvit_sweeps.train import train

    layer = {
        "data.dataset": "fashion-mnist",
        "data.loader": loader,
        "data.max_train_samples": max_train_samples,
        "epochs": epochs,
        "evaluate_test": True,
        **runtime_layer(),
        **(extra or {}),
    }
    config = build_config(layer, source="learn_fashion")
    start = time.perf_counter()
    result = train(config, callbacks=[epoch_printer()])
    wall = time.perf_counter() - start
    record = {
        "machine": machine(),
        "config": flatten_config(config),
        "dataset": result.dataset.label,
        "sizes": result.dataset_sizes,
        "fingerprint": result.dataset_fingerprint,
        "status": result.status,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "test_metrics": result.test_metrics,
        "history": result.history,
        "model_stats": result.model_stats,
        "wall_seconds": wall,
        "notes": result.notes,
    }
    save(name, record)
    if json_path is not None:
        json_path.write_text(json.dumps(record, indent=2, default=str))
    print(
        f"test acc1 {result.test_metrics.get('test_acc1', float('nan')):.4f} after {result.epochs_run} epochs "
        f"(best epoch {result.best_epoch}), {wall:.0f}s wall, sizes {result.dataset_sizes}",
        flush=True,
    )
    return record


# -- sweep: a short study with pruning -------------------------------------------------


def fashion_study(*, trials: int, max_epochs: int, max_train_samples: int) -> dict[str, Any]:
    """smoke.toml on fashion-mnist with a bigger budget: wider models, more data, more epochs."""
    study = copy.deepcopy(tomllib.loads((REPO / "studies" / "smoke.toml").read_text()))
    study.update(
        name="fashion-sweep",
        description="smoke study on real Fashion-MNIST, bigger budget",
        trials=trials,
        max_epochs=max_epochs,
    )
    study["sampler"] = {"type": "tpe", "seed": 0, "n_startup_trials": 4}
    study["pruner"] = {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 2}
    study["fixed"] = {
        "data.dataset": "fashion-mnist",
        "data.max_train_samples": max_train_samples,  # val is 10% of it; test stays the full 10k
        "data.batch_size": 128,
        "data.num_workers": 0,
        "data.loader": "device",
        "runtime.amp": False,
        "model.patch_size": 4,
        "model.drop_path_rate": 0.0,
    }
    study["space"] = {"optim.lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True}}
    study["stages"] = {
        "num_stages": {"type": "int", "low": 2, "high": 3},
        "base_width": {"type": "categorical", "choices": [32, 48, 64]},
        "width_mult": 2.0,
        "head_dim": 16,
        "depth": {"type": "int", "low": 1, "high": 2},
    }
    return study


def hvit(*args: str, log: Path) -> float:
    """Run one ``hvit-sweep`` command, appending its output to ``log``; returns its wall seconds."""
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ hvit-sweep {' '.join(args)}\n")
        handle.flush()
        subprocess.run(
            [sys.executable, "-m", "hvit_sweeps", *args], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=True
        )
    return time.perf_counter() - start


def sweep(*, trials: int, max_epochs: int, max_train_samples: int) -> dict[str, Any]:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = OUT_DIR / f"fashion-sweep-{stamp}"
    work.mkdir(parents=True)
    study_path = work / "fashion-sweep.toml"
    study_path.write_text(
        to_toml(fashion_study(trials=trials, max_epochs=max_epochs, max_train_samples=max_train_samples))
    )
    log = work / "commands.log"
    root = work / "store"
    device = ["--device", "cpu"] if runtime_layer() else []
    print(f"sweep: {study_path} (log {log})", flush=True)
    wall = hvit("run", "--study", str(study_path), "--root", str(root), *device, log=log)
    export = work / "best"
    hvit("best", "--study", str(study_path), "--root", str(root), "--export", str(export), log=log)
    hvit("eval", "--checkpoint", str(export / "best.pth"), "--split", "test", *device, log=log)
    record = {
        "machine": machine(),
        "study_file": str(study_path),
        "study": fashion_study(trials=trials, max_epochs=max_epochs, max_train_samples=max_train_samples),
        "wall_seconds": wall,
        **study_summary(study_path, root),
        "best_test": evaluate_export(export / "best.pth"),
        "log": str(log),
    }
    save("fashion-sweep", record)
    print(
        json.dumps({k: v for k, v in record.items() if k not in ("study", "trials")}, indent=2, default=str), flush=True
    )
    return record


def study_summary(study_path: Path, root: Path) -> dict[str, Any]:
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    study = optuna.load_study(study_name="fashion-sweep", storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # A pruned trial's figure is its best reported val_acc1 before it was stopped.
    reached = [max(t.intermediate_values.values()) for t in trials if t.intermediate_values]
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "epochs": len(t.intermediate_values),
            "best_val_acc1": max(t.intermediate_values.values()) if t.intermediate_values else None,
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "seconds": t.duration.total_seconds() if t.duration else None,
        }
        for t in trials
    ]
    return {
        "trials": rows,
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "complete_val_acc1_worst": min(t.value for t in complete) if complete else None,
        "complete_val_acc1_best": max(t.value for t in complete) if complete else None,
        "all_val_acc1_worst": min(reached) if reached else None,
        "all_val_acc1_best": max(reached) if reached else None,
        "best_trial": study.best_trial.number if complete else None,
        "best_params": study.best_trial.params if complete else None,
    }


def evaluate_export(checkpoint: Path) -> dict[str, Any]:
    """The exported winner on the full 10k test set, through the package API (as `hvit-sweep eval`)."""
    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.evaluate import evaluate_checkpoint

    saved = load_checkpoint(checkpoint)
    overrides = {"runtime.device": "cpu"} if runtime_layer() else {}
    results, data = evaluate_checkpoint(saved, overrides=overrides, splits=("val", "test"))
    return {
        "sizes": data.sizes,
        "fingerprint": data.fingerprint,
        **{k: v for k, v in results.items()},
        "config": saved.config.model_dump(mode="json"),
    }


# -- probe ------------------------------------------------------------------------------


def probe(*, samples: int) -> None:
    """Two short epochs per loader on a subset: the second epoch is the steady speed."""
    for loader in ("cpu", "device"):
        record = train_default(epochs=2, max_train_samples=samples, loader=loader, name=f"fashion-probe-{loader}")
        steady = record["history"][-1]
        full_epoch = 54_000 / steady["images_per_second"]
        print(
            f"probe loader={loader}: {steady['images_per_second']:.0f} img/s steady; a full 54k-image epoch "
            f"would take about {full_epoch:.0f}s of training",
            flush=True,
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", required=True)
    p = parts.add_parser("probe", help="measure one epoch's speed on a subset")
    p.add_argument("--samples", type=int, default=4000)
    t = parts.add_parser("train", help="the default HViT, evaluated on the test set")
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--max-train-samples", type=int, help="stratified subset of the 60k train pool [default: all]")
    t.add_argument("--loader", choices=("auto", "cpu", "device"), default="auto")
    t.add_argument("--batch-size", type=int, help="data.batch_size [default: the config's]")
    t.add_argument("--lr", type=float, help="optim.lr [default: the config's]")
    t.add_argument("--data-dir", type=Path, help="data.data_dir: torchvision's FashionMNIST/raw layout under it")
    t.add_argument("--max-eval-samples", type=int, help="cap val and test (a dry run) [default: all]")
    t.add_argument("--json", type=Path, help="also write the record to this path")
    s = parts.add_parser("sweep", help="a short study with pruning, then the winner's test accuracy")
    s.add_argument("--trials", type=int, default=8)
    s.add_argument("--max-epochs", type=int, default=8)
    s.add_argument("--max-train-samples", type=int, default=12_000)
    args = parser.parse_args(argv)
    if args.part == "probe":
        probe(samples=args.samples)
    elif args.part == "train":
        extra = {
            key: value
            for key, value in {
                "data.batch_size": args.batch_size,
                "optim.lr": args.lr,
                "data.data_dir": args.data_dir and str(args.data_dir),
                "data.max_eval_samples": args.max_eval_samples,
            }.items()
            if value is not None
        }
        train_default(
            epochs=args.epochs,
            max_train_samples=args.max_train_samples,
            loader=args.loader,
            extra=extra,
            json_path=args.json,
        )
    else:
        sweep(trials=args.trials, max_epochs=args.max_epochs, max_train_samples=args.max_train_samples)


if __name__ == "__main__":
    main(sys.argv[1:])
