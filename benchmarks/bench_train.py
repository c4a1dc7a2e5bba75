"""Section ``train``: steady training img/s and warm-up seconds per model size x precision x loader x step mode.

Each case trains once (best of ``--repeats``) through the product's :func:`hvit_sweeps.train.train`
in a fresh worker process; img/s is against the same size at fp32, ``loader=cpu``, eager, and
the warm-up against the same setting run eager.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench_harness import BOX, NOT_STARTED, Report, Row, Stopped
from profiles import LOADERS, MODES, PRECISIONS, SIZES, Case, Profile
from workers import collect, spawn_worker, train_config

NOISE_FLOOR_S = 0.5  # warm-ups below this are indistinguishable from epoch-to-epoch noise


@dataclass
class Measured:
    """Steady img/s (epochs 2+) and warm-up: epoch 1's extra seconds over a steady epoch."""

    images_per_second: float
    warmup_seconds: float
    notes: list[str]
    raw: dict[str, Any]

    @classmethod
    def from_worker(cls, raw: dict[str, Any]) -> Measured:
        history = raw["history"]
        steady = history[1:] or history
        # The same images every epoch, so the harmonic mean is total images / total seconds.
        ips = statistics.harmonic_mean([h["images_per_second"] for h in steady])
        warmup = history[0]["epoch_seconds"] - statistics.median(h["epoch_seconds"] for h in steady)
        # Not clipped at 0: a negative warm-up means the machine was noisier than the effect.
        return cls(ips, warmup if len(history) > 1 else float("nan"), raw["notes"], raw)


def all_cases() -> Iterator[Case]:
    for size in SIZES:
        for precision in PRECISIONS:
            for loader in LOADERS:
                for mode in MODES:
                    yield Case(size, precision, loader, mode)


def train_cases(profile: Profile, *, full: bool) -> Iterator[tuple[Case, str | None]]:
    """Every combination, with the reason it is skipped (None: it runs); chosen cases first, in their order."""
    if full or not profile.cases:
        for case in all_cases():
            yield case, None if full else _skip_reason(profile, case)
        return
    yield from ((case, None) for case in profile.cases)
    reason = f"not in this run's cases (profile {profile.name} or --cases); --profile gpu --only train runs them"
    yield from ((case, reason) for case in all_cases() if case not in profile.cases)


def _skip_reason(profile: Profile, case: Case) -> str | None:
    compiled = case.mode.startswith("compile")
    if not profile.gpu_plan:
        if case.mode == "cuda_graphs":
            return "n/a on CPU" if case != Case("small", "fp32", "device", "cuda_graphs") else None
        if case.mode == "compile=reduce-overhead":
            return "n/a on CPU: reduce-overhead is default plus CUDA graphs"
        if compiled and (case.size, case.precision, case.loader) != ("small", "fp32", "device"):
            return "compile on CPU: small fp32 only (warm-up cost)"
        if case.precision != "fp32" and case.loader == "cpu":
            return "cpu profile: loader axis at fp32 only"
        return None
    if case.mode == "cuda_graphs" and case.precision == "fp16":
        return "fp16's gradient scaler cannot be captured (product runs eager)"
    if compiled and (case.loader == "cpu" or case.precision != "bf16"):
        return "compile measured at bf16 with the device loader only (use --full)"
    return None


def bench_train(profile: Profile, report: Report, *, logs: Path, full: bool) -> None:
    results: dict[Case, Measured | None] = {}
    for case, skip in train_cases(profile, full=full):
        if skip is None and BOX.over():
            skip = NOT_STARTED
        if skip is not None:
            report.add(Row("train", "skipped", case.label, None, "img/s", note=skip))
            continue
        results[case], failure = measure_case(profile, case, logs=logs)
        add_train_rows(report, case, results, failure=failure)


def measure_case(profile: Profile, case: Case, *, logs: Path) -> tuple[Measured | None, str]:
    """The best of ``profile.repeats`` fresh processes, or None and why."""
    samples = profile.train_samples[(case.size, case.precision)]
    epochs = 1 if (profile.device == "cpu" and case.mode == "cuda_graphs") else profile.epochs
    config = train_config(
        profile,
        size=case.size,
        precision=case.precision,
        loader=case.loader,
        mode=case.mode,
        samples=samples,
        epochs=epochs,
    )
    repeats = 1 if epochs == 1 else profile.repeats
    runs, failure = [], "failed (see logs)"
    for repeat in range(repeats):
        log = logs / f"train-{re.sub(r'[^a-z0-9]+', '-', case.label)}-{repeat}.log"
        print(f"  train {case.label} ({samples} images, {epochs} epochs) run {repeat + 1}/{repeats} ...", flush=True)
        # A fresh inductor cache per process: each trial of a sweep compiles a new architecture.
        env = {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-", dir=logs)}
        try:
            runs.append(Measured.from_worker(collect(spawn_worker({"config": config}, log=log, env=env), log)))
        except RuntimeError as err:
            print(f"    failed: {err}", flush=True)
        except Stopped as err:
            print(f"    {err}", flush=True)
            failure = str(err)
            break
    return (max(runs, key=lambda m: m.images_per_second) if runs else None), failure


def add_train_rows(
    report: Report, case: Case, results: dict[Case, Measured | None], *, failure: str = "failed (see logs)"
) -> None:
    measured = results[case]
    if measured is None:
        report.add(Row("train", "img/s", case.label, None, "img/s", note=failure))
        return
    note = "; ".join(measured.notes)
    if (
        measured.notes
        and report.meta.get("runtime_device", report.meta["profile"]) == "cpu"
        and case.mode == "cuda_graphs"
    ):
        report.add(Row("train", "img/s", case.label, None, "img/s", note=f"n/a on CPU: {note}"))
        return
    samples = measured.raw["sizes"]["train"]
    setting = f"{case.label} (synthetic, {samples} train imgs)"
    naive = results.get(Case(case.size, "fp32", "cpu", "eager"))
    eager = results.get(replace(case, mode="eager")) if case.mode != "eager" else None
    detail = {k: [round(h[k], 4) for h in measured.raw["history"]] for k in ("epoch_seconds", "images_per_second")}
    report.add(
        Row(
            "train",
            "img/s",
            setting,
            measured.images_per_second,
            "img/s",
            baseline=naive.images_per_second if naive else None,
            note=note or "baseline: same size, fp32, loader=cpu, eager",
            detail=detail,
        )
    )
    report.add(warmup_row(setting, measured, eager))


def warmup_row(setting: str, measured: Measured, eager: Measured | None) -> Row:
    """Warm-up against eager's; a ratio over a baseline lost in the noise would mean nothing."""
    note = "epoch 1 minus a steady epoch"
    if eager is None:
        return Row("train", "warm-up s", setting, measured.warmup_seconds, "s", note=note)
    row = Row(
        "train",
        "warm-up s",
        setting,
        measured.warmup_seconds,
        "s",
        baseline=eager.warmup_seconds,
        note=f"{note}; baseline: same setting, eager",
    )
    if abs(eager.warmup_seconds) < NOISE_FLOOR_S:
        row.ratio = None
        row.note += f" (below {NOISE_FLOOR_S}s, so no ratio; extra warm-up {measured.warmup_seconds - eager.warmup_seconds:.1f}s)"
    return row
