"""One training measurement in its own process (``bench.py --worker JSON``), and the clocks it reads.

Every training measurement runs in a fresh process so that no compile cache, allocator state
or thread pool carries over between settings; the train and sweep-throughput sections spawn
these workers and read the JSON line each prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_harness import caps, device_name, start_child, wait_child
from profiles import MODES, PRECISIONS, SIZES, TINY, Profile

BENCH = Path(__file__).resolve().with_name("bench.py")  # its --worker flag runs run_worker


def run_worker(spec: dict[str, Any]) -> None:
    """``bench.py --worker JSON``: train once through the product and print what the epochs and steps took.

    With ``barrier`` set, it waits for its ``parties`` peers after loading its data, so that
    K processes start training together; ``serial`` waits for the previous one to finish
    instead (a deliberately serialised run, which the overlap accounting must reject).
    """
    import torch

    from hvit_sweeps.config import build_config
    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.train import train

    config = build_config(spec["config"], source="bench")
    splits = load_dataset(config.data, seed=config.seed)
    if spec.get("barrier"):
        wait_at_barrier(Path(spec["barrier"]), spec["parties"], turn=spec.get("turn"))
    clock = step_clock()
    start = time.time()
    try:
        result = train(config, callbacks=[clock], splits=splits)
    finally:
        if spec.get("barrier"):
            (Path(spec["barrier"]) / f"done-{spec.get('turn', os.getpid())}").touch()
    print(
        json.dumps(
            {
                "history": result.history,
                "notes": result.notes,
                "sizes": result.dataset_sizes,
                "dataset": result.dataset.label,
                "device": device_name(config.runtime.device),
                "threads": torch.get_num_threads(),
                "start": start,
                "epoch_ends": clock.epoch_ends,
                "steps": clock.steps,
                "images_per_step": result.dataset_sizes["train"]
                / max(1, len(clock.steps) // max(1, len(clock.epoch_ends))),
            }
        )
    )


class StepClock:
    """Wall-clock time of every optimizer step, epoch end and announced phase (Callback hooks).

    A mixin, made a ``hvit_sweeps.train.Callback`` by :func:`step_clock` (which imports torch),
    so that importing bench.py (``--markdown``, the overlap tests) does not, and hooks added to
    Callback later keep their no-op defaults. On CUDA a step's time is when the host queued
    it; the queue is bounded and every epoch ends in a host sync, so the timestamps trail
    the GPU by at most a few steps.
    """

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.epoch_ends: list[float] = []
        self.phases: dict[str, float] = {}

    def on_phase(self, phase: str) -> None:
        self.phases.setdefault(phase, time.time())

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        self.steps.append(time.time())

    def on_epoch_end(self, report: Any) -> str | None:
        self.epoch_ends.append(time.time())
        return None


def step_clock() -> StepClock:
    """A :class:`StepClock` that is also a ``hvit_sweeps.train.Callback``."""
    from hvit_sweeps.callbacks import Callback

    return type("StepCallback", (StepClock, Callback), {})()


def wait_at_barrier(barrier: Path, parties: int, *, turn: int | None = None, timeout: float = 600.0) -> None:
    """A file barrier: go when all ``parties`` have written ``ready-*``; with ``turn``, when turn-1 wrote ``done-*``.

    Files rather than a multiprocessing.Barrier: the workers are separate ``bench.py --worker``
    processes (a fresh interpreter each, as a sweep trial's worker is), not forks of one.
    """
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if turn is None and len(list(barrier.glob("ready-*"))) >= parties:
            return
        if turn is not None and (turn == 0 or (barrier / f"done-{turn - 1}").exists()):
            return
        time.sleep(0.02)


def spawn_worker(spec: dict[str, Any], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, str(BENCH), "--worker", json.dumps(spec)]
    with log.open("w") as err:
        return start_child(command, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **(env or {})})


def collect(process: subprocess.Popen, log: Path) -> dict[str, Any]:
    """The worker's JSON line; :class:`Stopped` if the time box ran out first."""
    out = wait_child(process, communicate=True) or ""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        tail = log.read_text()[-600:].strip().splitlines()
        raise RuntimeError(f"worker exited {process.returncode}: {tail[-1] if tail else 'no output'} (see {log})")
    return json.loads(lines[-1])


def train_config(
    profile: Profile, *, size: str, precision: str, loader: str, mode: str, samples: int, epochs: int
) -> dict[str, Any]:
    return {
        "data.dataset": "synthetic",
        "data.max_train_samples": samples,
        **caps(profile.eval_samples, "data.max_eval_samples"),
        "data.batch_size": profile.batch_size,
        "data.loader": loader,
        "data.num_workers": profile.num_workers if loader == "cpu" else 0,
        "runtime.device": profile.device,
        "epochs": epochs,
        **(TINY if size == "tiny" else SIZES[size]),
        **PRECISIONS[precision],
        **MODES[mode],
    }
