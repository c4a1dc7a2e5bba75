"""Section ``sweep-wall``: wall time of a fixed N-trial ``hvit-sweep run`` against a naive one.

Every variant runs the same study in its own root: on the cpu plan a 6-point grid without
pruning, on the gpu plan ``depth-width.toml`` on synthetic data; the first variant is the
naive baseline (one trial at a time, ``loader=cpu``, eager).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench_harness import BOX, Report, Row
from profiles import Profile
from sweeps import (
    NAIVE,
    WALL_FINISH_S,
    SweepRun,
    Variant,
    run_sweep_once,
)

WALL_BASELINE_SHARE = 0.6  # under --time-box, the naive baseline's `run --timeout` share of the time left


def sweep_variants(profile: Profile) -> list[Variant]:
    """The first is the naive baseline; on the gpu plan, those of ``profile.wall_variants``."""
    if not profile.gpu_plan:
        cpu, two = ["--device", "cpu"], ["--device", "cpu", "--workers", "2"]
        # `run` gives each worker cores / workers threads unless OMP_NUM_THREADS is set, so
        # setting it to the core count shows the unsplit case for comparison.
        unsplit = {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
        return [
            Variant("1 worker, loader=cpu, eager (naive)", NAIVE, cpu),
            Variant("2 workers, loader=cpu, eager (`run` splits the cores)", NAIVE, two),
            Variant(f"2 workers, OMP_NUM_THREADS={unsplit['OMP_NUM_THREADS']} each (no split)", NAIVE, two, unsplit),
        ]
    fast = {"data.loader": "device", "runtime.compile": "off", "runtime.cuda_graphs": True}
    k = profile.trials_per_gpu
    variants = {
        "naive": Variant(
            "1 trial at a time, loader=cpu, eager (naive)", {**NAIVE, "data.num_workers": profile.num_workers}, []
        ),
        "graphs": Variant("1 trial at a time, loader=device, cuda_graphs", fast, []),
        "per-gpu": Variant(
            f"--devices 0 --trials-per-gpu {k}, loader=device, cuda_graphs",
            fast,
            ["--devices", "0", "--trials-per-gpu", str(k)],
        ),
    }
    return [variants["naive"], *(variants[name] for name in profile.wall_variants if name != "naive")]


def bench_wall(profile: Profile, report: Report, *, logs: Path) -> None:
    """Each variant ``repeats`` times, interleaved so that a burst of load hits all alike; best of each.

    A variant's rows are saved once its last repeat ends. Under ``--time-box`` each `run` gets a
    ``--timeout`` (no new trial after it); if that cuts the baseline short, the other variants
    run as many trials as it finished (`run --trials`), so that their wall times still compare.
    """
    variants = sweep_variants(profile)
    runs: dict[int, list[SweepRun]] = {i: [] for i in range(len(variants))}
    failure = {i: "`run` failed (see wall-*.log)" for i in range(len(variants))}
    baseline: SweepRun | None = None
    target = profile.sweep_trials
    for repeat in range(profile.repeats):
        for index, variant in enumerate(variants):
            result = run_sweep_once(
                profile,
                variant,
                name=f"bench-wall-{index}",
                logs=logs,
                tag=f"{index}-{repeat}",
                timeout=_wall_timeout(index, len(variants)),
                trials=target,
            )
            if isinstance(result, str):
                failure[index] = result
            else:
                runs[index].append(result)
                target = min(target, result.stats["finished"] or target) if index == 0 else target
            if repeat == profile.repeats - 1:
                best = add_wall_rows(
                    report,
                    profile,
                    variant,
                    runs[index],
                    baseline=baseline,
                    failure=failure[index],
                    first=index == 0,
                    asked=profile.sweep_trials if index == 0 else target,
                )
                baseline = best if index == 0 else baseline


def _wall_timeout(index: int, count: int) -> float | None:
    """`run --timeout` for variant ``index`` of ``count``: the baseline, the slowest, gets the largest share."""
    left = BOX.left()
    if left is None:
        return None
    share = WALL_BASELINE_SHARE if index == 0 and count > 1 else 1 / (count - index)
    return max(1.0, (left - WALL_FINISH_S) * share)


def add_wall_rows(
    report: Report,
    profile: Profile,
    variant: Variant,
    runs: Sequence[SweepRun],
    *,
    baseline: SweepRun | None,
    failure: str,
    first: bool,
    asked: int,
) -> SweepRun | None:
    """Wall s and trained epochs/s of the best run (``first``: the baseline's own); no wall ratio when trial counts differ."""
    if not runs:
        report.add(Row("sweep-wall", "wall s", variant.label, None, "s", note=failure))
        return None
    best = min(runs, key=lambda r: r.wall)
    baseline = best if first else baseline
    stats = best.stats
    if stats["finished"] < asked:
        trials = f"{stats['finished']} of {asked} trials (`run --timeout` at the time box)"
    elif asked < profile.sweep_trials:
        trials = f"{asked} trials (as many as the baseline finished within the time box)"
    else:
        trials = f"{asked} trials"
    setting = f"{variant.label}; {trials}"
    walls = ", ".join(f"{r.wall:.1f}" for r in runs)
    states = (
        f"{stats['complete']} complete, {stats['pruned']} pruned, {stats['failed']} failed, {stats['epochs']} epochs"
    )
    same_trials = baseline if baseline is not None and baseline.stats["finished"] == stats["finished"] else None
    same = same_trials is not None
    speedup = f"; {same_trials.wall / best.wall:.2f}x faster" if same_trials and same_trials is not best else ""
    compare = "" if same or baseline is None else "; trial counts differ from the baseline's: compare trained epochs/s"
    report.add(
        Row(
            "sweep-wall",
            "wall s",
            setting,
            best.wall,
            "s",
            baseline=same_trials.wall if same_trials else None,
            note=f"best of [{walls}] s; {states}{speedup}{compare}; study in {best.where}",
        )
    )
    base_rate = baseline.stats["epochs"] / baseline.wall if baseline is not None else None
    report.add(
        Row(
            "sweep-wall",
            "trained epochs/s",
            setting,
            stats["epochs"] / best.wall,
            "epochs/s",
            baseline=base_rate,
            note="epochs trained / wall: comparable even when pruning differs",
        )
    )
    return best
