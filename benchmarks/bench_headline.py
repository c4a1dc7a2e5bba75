"""Section ``sweep-headline`` (issue 11): the N-trial study on the new defaults against the naive rate.

The fast run packs K trials per GPU as ``--trials-per-gpu auto`` would; the naive baseline
runs for the time left and gives trained epochs per second, applied to the fast run's epochs.
"""

from __future__ import annotations

from pathlib import Path

from bench_harness import BOX, Report, Row
from profiles import Profile
from sweeps import (
    NAIVE,
    SweepRun,
    Variant,
    gpu_sweep_study,
    run_sweep_once,
)

# Kept back after each `run --timeout` for the trials in flight and finalize(): K graphed trials of
# ~10 s each for the fast run; one naive 20-epoch trial (~40 s at 25k img/s) for the baseline.
FAST_FINISH_S = 20.0
NAIVE_FINISH_S = 45.0


def headline_variants(profile: Profile) -> tuple[Variant, Variant, str]:
    """(the new defaults, packed; the naive baseline; how K was chosen).

    The fast variant sets no speed flag: loader, precision and step mode are the "auto"
    defaults of `train` on the device. K comes from :mod:`hvit_sweeps.packing`, as
    ``--trials-per-gpu auto`` chooses it, passed explicitly so that this bench also runs
    on a package whose `run` does not take "auto" yet.
    """
    naive = Variant(
        "1 trial at a time, fp32, loader=cpu, eager (naive)",
        {**NAIVE, "runtime.amp": False, "data.num_workers": profile.num_workers},
        [],
    )
    if profile.device != "cuda":
        k = profile.trials_per_gpu
        return Variant(f"defaults, `run --workers {k}` (CPU: no GPU to pack)", {}, ["--workers", str(k)]), naive, "cpu"
    from hvit_sweeps.packing import choose_trials_per_gpu, probe_card, study_trial_bytes
    from hvit_sweeps.study import StudySpec

    spec = StudySpec.model_validate(gpu_sweep_study(profile, "bench-headline", {}))
    packing = choose_trials_per_gpu(study_trial_bytes(spec, {"runtime.device": "cuda"}), probe_card(["0"]))
    fast = Variant(
        f"defaults (bf16, loader=device, CUDA graphs: auto), --devices 0 --trials-per-gpu {packing.k}",
        {},
        ["--devices", "0", "--trials-per-gpu", str(packing.k)],
    )
    return fast, naive, packing.reason


def bench_headline(profile: Profile, report: Report, *, logs: Path) -> None:
    """The N-trial study on the new defaults, then the naive baseline for what time is left.

    The baseline runs one trial at a time under `run --timeout` and gives a rate, trained
    epochs per second (its per-trial costs included); the fast run's epochs at that rate
    are its projected wall time. The two runs' TPE draws differ (K workers offset the
    sampler's seed), so epochs, not trials, are the common unit.
    """
    fast, naive, why = headline_variants(profile)
    print(f"  sweep-headline: {why}", flush=True)
    left = BOX.left()
    fast_timeout = None if left is None else max(1.0, left - profile.headline_naive_s - FAST_FINISH_S)
    got = run_sweep_once(profile, fast, name="bench-headline", logs=logs, tag="headline-fast", timeout=fast_timeout)
    left = BOX.left()
    naive_timeout = profile.headline_naive_s - NAIVE_FINISH_S if left is None else left - NAIVE_FINISH_S
    base = run_sweep_once(
        profile, naive, name="bench-headline", logs=logs, tag="headline-naive", timeout=max(1.0, naive_timeout)
    )
    add_headline_rows(report, profile, fast=(fast, got), naive=(naive, base), why=why)


def add_headline_rows(
    report: Report,
    profile: Profile,
    *,
    fast: tuple[Variant, SweepRun | str],
    naive: tuple[Variant, SweepRun | str],
    why: str,
) -> None:
    (fast_variant, got), (naive_variant, base) = fast, naive
    section, asked = "sweep-headline", profile.sweep_trials
    rate = base.stats["epochs"] / base.wall if isinstance(base, SweepRun) and base.wall > 0 else None
    if isinstance(base, SweepRun):
        report.add(
            Row(
                section,
                "trained epochs/s",
                f"{naive_variant.label}; `run --timeout`",
                rate,
                "epochs/s",
                note=f"{_states(base)} in {base.wall:.1f} s; the baseline's rate (per-trial costs included)",
            )
        )
    else:
        report.add(Row(section, "trained epochs/s", naive_variant.label, None, "epochs/s", note=base))
    if not isinstance(got, SweepRun):
        report.add(Row(section, "wall s", f"{fast_variant.label}; {asked} trials", None, "s", note=got))
        return
    setting = f"{fast_variant.label}; {got.stats['finished']} of {asked} trials"
    projected = got.stats["epochs"] / rate if rate else None
    short = got.stats["finished"] < asked
    cut = (
        f"; cut by `run --timeout` at {got.stats['finished']} trials: {asked} would take about "
        f"{got.wall * asked / max(1, got.stats['finished']):.0f} s at this pace"
        if short
        else ""
    )
    report.add(
        Row(
            section,
            "wall s",
            setting,
            got.wall,
            "s",
            baseline=projected,
            note=f"{_states(got)}{cut}; target < 600 s for 50 trials; baseline: the naive rate over the same "
            f"{got.stats['epochs']} epochs (projected, see the rate row); {why}; study in {got.where}",
        )
    )
    fast_rate = got.stats["epochs"] / got.wall
    report.add(
        Row(
            section,
            "trained epochs/s",
            setting,
            fast_rate,
            "epochs/s",
            baseline=rate,
            note="ratio = speed-up over the naive baseline; target >= 4",
        )
    )


def _states(run: SweepRun) -> str:
    stats = run.stats
    return (
        f"{stats['finished']} trials ({stats['complete']} complete, {stats['pruned']} pruned, {stats['failed']} failed), "
        f"{stats['epochs']} epochs"
    )
