"""The overhead of measuring and logging a trial's cost, against the trial's own wall time.

For each trial shape, one ``train()`` is timed from outside (the baseline, measured
in the same run), then every piece the cost feature adds to a trial is timed on its own:

* the meter (``CostMeter.start`` + ``finish``: peak-RSS reset and read, clocks),
* the latency probe (warm-up + timed forwards on the trained model),
* the extra writes of a sweep trial: the cost metrics in MLflow (a separate ``log_metrics``
  call, an upper bound: the objective sends them in the batch it already sends), the two
  trial user attrs in an Optuna journal, and the cost-basis tag.

Overhead = their sum / the trial's wall time. Usage::

    python benchmarks/cost_overhead.py            # smoke-scale and default-model trials, synthetic data
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages.journal import JournalFileBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_harness import save_json

from hvit_sweeps.config import build_config
from hvit_sweeps.cost import CostMeter, measure_latency
from hvit_sweeps.data import load_dataset, make_loaders
from hvit_sweeps.keys import ATTR_COST, ATTR_DEVICE, cost_metric
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.train import train

SHAPES: dict[str, dict[str, Any]] = {
    # The smoke study's scale: the shortest trials this project runs, so the worst ratio.
    "smoke (16/32, 512 imgs, 3 ep)": {
        "model.embed_dims": [16, 32],
        "model.depths": [1, 1],
        "model.num_heads": [1, 2],
        "data.max_train_samples": 512,
        "data.max_eval_samples": 128,
        "epochs": 3,
    },
    # The default model on a few thousand images: still a short trial by real standards.
    "default model (2.15M, 2000 imgs, 2 ep)": {
        "data.max_train_samples": 2000,
        "data.max_eval_samples": 500,
        "epochs": 2,
    },
}
COMMON = {
    "data.dataset": "synthetic",
    "data.batch_size": 64,
    "data.num_workers": 0,
    "runtime.device": "cpu",
    "runtime.amp": False,
}


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, layer: dict[str, Any], tmp: Path) -> dict[str, Any]:
    config = build_config(COMMON, layer)
    splits = load_dataset(config.data, seed=config.seed)
    start = time.perf_counter()
    result = train(config, splits=splits)
    trial_seconds = time.perf_counter() - start

    device = torch.device("cpu")
    meter = timed(lambda: CostMeter.start(device).finish(result.history), repeats=20)
    from hvit_sweeps.model import build_model

    model = build_model(config.model)
    loaders = make_loaders(splits, config.data, device=device, seed=config.seed)
    images = next(iter(loaders.val))[0][:32]
    import contextlib

    latency = timed(
        lambda: measure_latency(model, images, autocast=contextlib.nullcontext, memory_format=torch.contiguous_format),
        repeats=5,
    )

    tracker = Tracker(None, root=tmp / name.split()[0])
    experiment = tracker.experiment_id("bench")
    run_id = tracker.client.create_run(experiment).info.run_id
    metrics = {cost_metric(k): v for k, v in result.cost.items()}
    log = timed(lambda: tracker.log_metrics(run_id, metrics, step=1), repeats=10)
    tag = timed(lambda: tracker.client.set_tag(run_id, "hvit.cost_basis", "process CPU time"), repeats=10)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp / f"{name.split()[0]}.journal")))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    attrs = timed(
        lambda: (trial.set_user_attr(ATTR_COST, result.cost), trial.set_user_attr(ATTR_DEVICE, "cpu")), repeats=10
    )
    overhead = meter + latency + log + tag + attrs
    return {
        "shape": name,
        "trial_seconds": trial_seconds,
        "meter_ms": 1000 * meter,
        "latency_probe_ms": 1000 * latency,
        "mlflow_metrics_ms": 1000 * log,
        "mlflow_tag_ms": 1000 * tag,
        "optuna_attrs_ms": 1000 * attrs,
        "overhead_ms": 1000 * overhead,
        "overhead_share": overhead / trial_seconds,
        "cost": result.cost,
    }


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, layer in SHAPES.items():
            row = measure(name, layer, Path(tmp))
            rows.append(row)
            print(
                f"{name}: trial {row['trial_seconds']:.2f} s; meter {row['meter_ms']:.2f} ms, latency probe "
                f"{row['latency_probe_ms']:.1f} ms, MLflow metrics {row['mlflow_metrics_ms']:.1f} ms, tag "
                f"{row['mlflow_tag_ms']:.1f} ms, Optuna attrs {row['optuna_attrs_ms']:.1f} ms; overhead "
                f"{row['overhead_ms']:.1f} ms = {100 * row['overhead_share']:.2f}% of the trial",
                flush=True,
            )
    save_json("cost-overhead", rows)


if __name__ == "__main__":
    main()
