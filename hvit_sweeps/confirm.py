"""Seed-confirmed winners: ``hvit-sweep best --confirm --top K --seeds N``.

The gap between a study's top trials is often no larger than the seed-to-seed
spread of one config (benchmarks/RESULTS.md, "Seed spread"). So the top-K complete
trials are trained again with N new training seeds each, on the study's own
train/val split (the split is rebuilt from the trial's seed; only the training
seed changes: init, shuffles, augmentation, drop path) and at the trial's epoch
budget, one after another. Each replicate is scored as its trial was (the first
objective at the best epoch, on val); the test split is never evaluated.

Trials are ranked by the mean of their replicates, each with a 95% t-interval,
and the winner is compared with the runner-up by Welch's t-interval on the
difference of means: "trial 12 beats trial 7 by 0.4 ± 0.3 points" when the
interval excludes zero, else "cannot tell apart". The replicates are MLflow child
runs of the study's run (tag ``hvit.role=replicate``); the result is kept in the
study (:data:`ATTR_CONFIRMATION`), where ``best --retrain`` and ``best --export``
find the confirmed winner.
"""

from __future__ import annotations

import math
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hvit_sweeps.callbacks import Callback, EpochReport
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import (
    ATTR_CONFIRMATION,
    ATTR_RUN_ID,
    TAG_DATASET,
    TAG_DATASET_HASH,
    TAG_HOST,
    TAG_ROLE,
    TAG_SOURCE_RUN,
    TAG_SOURCE_TRIAL,
    TAG_STUDY,
    TAG_TRIAL_STATE,
    best_metric,
)
from hvit_sweeps.sweep.record import StudyRecord

__all__ = [
    "ATTR_CONFIRMATION",
    "ROLE_REPLICATE",
    "candidates",
    "Confirmation",
    "Ranked",
    "compare",
    "confirm_top",
    "confirmation_rows",
    "confirmation_table",
    "confirmed_winner",
    "rank",
    "stored_confirmation",
    "t_975",
]

ROLE_REPLICATE = "replicate"  # MLflow role of a replicate run
TAG_SEED = "hvit.replicate_seed"
SEED_OFFSET = 100  # replicate i of a trial trains with seed trial_seed + 100 + i: never the trial's, nor the retrain's

# Two-sided 95% quantiles of Student's t (t_0.975) for 1..30 degrees of freedom, then at 40, 60 and 120.
# A df between rows (Welch's are fractional) takes the lower row: the interval errs wide, never narrow.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_T_975_LARGE = ((120, 1.980), (60, 2.000), (40, 2.021))


def t_975(df: float) -> float:
    """t_0.975 for ``df`` degrees of freedom, from the row at or below it."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {df}")
    whole = int(math.floor(df))
    if whole <= len(_T_975):
        return _T_975[whole - 1]
    return next((t for row, t in _T_975_LARGE if whole >= row), _T_975[-1])


@dataclass(frozen=True)
class Ranked:
    """One confirmed trial: its replicate values, their mean and 95% half-width."""

    trial: int
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def half_width(self) -> float:
        n = len(self.values)
        return t_975(n - 1) * statistics.stdev(self.values) / math.sqrt(n) if n > 1 else math.inf


@dataclass(frozen=True)
class Confirmation:
    """The ranking of a confirmation and its plain statement."""

    metric: str
    maximize: bool
    seeds: list[int]
    ranked: list[Ranked]  # best mean first
    statement: str
    separated: bool  # the winner's lead over the runner-up excludes zero at 95%

    @property
    def winner(self) -> int:
        return self.ranked[0].trial

    def as_attr(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "maximize": self.maximize,
            "seeds": self.seeds,
            "trials": {str(r.trial): r.values for r in self.ranked},
            "winner": self.winner,
            "separated": self.separated,
            "statement": self.statement,
            "at": time.time(),
        }


def _scale(metric: str) -> tuple[float, str]:
    """Accuracies are stated in percentage points, everything else in its own unit."""
    return (100.0, "points") if "acc" in metric else (1.0, metric.split("_")[-1] if "_" in metric else "")


def compare(first: Ranked, second: Ranked, *, metric: str, maximize: bool) -> tuple[str, bool]:
    """ "trial A beats trial B by d ± h points" (Welch's 95% interval excludes 0), or "cannot tell apart"."""
    scale, unit = _scale(metric)
    lead = (first.mean - second.mean) * (1 if maximize else -1)
    var1, var2 = (statistics.variance(r.values) / len(r.values) for r in (first, second))
    se = math.sqrt(var1 + var2)
    if se == 0:
        half = 0.0
    else:  # Welch-Satterthwaite degrees of freedom
        df = (var1 + var2) ** 2 / (var1**2 / (len(first.values) - 1) + var2**2 / (len(second.values) - 1))
        half = t_975(max(1.0, df)) * se
    size = f"{scale * lead:.2f} ± {scale * half:.2f} {unit}".rstrip()
    if lead > half:
        return f"trial {first.trial} beats trial {second.trial} by {size}", True
    return f"trial {first.trial} and trial {second.trial} cannot be told apart ({size})", False


def rank(values: dict[int, list[float]], *, metric: str, maximize: bool, seeds: list[int]) -> Confirmation:
    """Rank trials by the mean of their replicates and state whether the winner beats the runner-up."""
    ranked = sorted(
        (Ranked(trial, list(v)) for trial, v in values.items()),
        key=lambda r: (-r.mean if maximize else r.mean, r.trial),
    )
    if len(ranked) < 2:
        raise HvitError("--confirm needs at least 2 trials to compare: raise --top")
    statement, separated = compare(ranked[0], ranked[1], metric=metric, maximize=maximize)
    return Confirmation(metric, maximize, seeds, ranked, statement, separated)


def stored_confirmation(study: optuna.Study) -> Confirmation | None:
    """The study's last confirmation, or None."""
    record = study.user_attrs.get(ATTR_CONFIRMATION)
    if not isinstance(record, dict):
        return None
    values = {int(k): list(v) for k, v in record["trials"].items()}
    return rank(values, metric=record["metric"], maximize=record["maximize"], seeds=list(record["seeds"]))


def confirmed_winner(study: optuna.Study) -> int | None:
    confirmation = stored_confirmation(study)
    return None if confirmation is None else confirmation.winner


# -- the replicates ----------------------------------------------------------------------


def confirm_top(
    study: optuna.Study,
    *,
    tracker: Any,
    top: int,
    seeds: int,
    overrides: dict[str, Any] | None = None,
    progress: Callable[[int, int], Sequence[Any]] | None = None,
) -> Confirmation:
    """Train the top-``top`` complete trials with ``seeds`` new seeds each, log them, rank them, store the result.

    Args:
        tracker: The study's :class:`~hvit_sweeps.tracking.Tracker`.
        overrides: Config paths for this machine (``runtime.device``, ``data.data_dir``).
        progress: Called with (trial number, seed) before each replicate; returns its extra callbacks.
    """
    chosen = candidates(study, top=top, seeds=seeds)
    experiment, parent = StudyRecord.of(study).runs()
    metric = (study.metric_names or ["val_acc1"])[0]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    values: dict[int, list[float]] = {}
    used: list[int] = []
    with tempfile.TemporaryDirectory(prefix="hvit-confirm-") as tmp:
        configs = {t.number: _trial_config(tracker, t, Path(tmp), overrides or {}) for t in chosen}
        splits_cache: dict[str, Any] = {}
        for trial in chosen:
            base = configs[trial.number]
            trial_seeds = [base.seed + SEED_OFFSET + i for i in range(seeds)]
            used = trial_seeds
            values[trial.number] = [
                _replicate(tracker, study, trial, base, seed, metric, parent, experiment, splits_cache, progress)
                for seed in trial_seeds
            ]
    confirmation = rank(values, metric=metric, maximize=maximize, seeds=used)
    study.set_user_attr(ATTR_CONFIRMATION, confirmation.as_attr())
    _write_replicates_view(tracker, study.study_name, experiment, metric, maximize)
    return confirmation


def replicates_view_key(study_name: str) -> str:
    from hvit_sweeps.mlflow_view import view_key

    return view_key(study_name) + "-replicates"


def _write_replicates_view(tracker: Any, study_name: str, experiment: str, metric: str, maximize: bool) -> None:
    """A saved MLflow view beside the trials one: the replicate runs, best first, with their trial and seed."""
    from hvit_sweeps.keys import role_filter
    from hvit_sweeps.metrics import tracked_metric
    from hvit_sweeps.mlflow_view import StudyView, write_study_view

    view = StudyView(
        name=f"{study_name}: seed replicates (best --confirm)",
        objectives=[tracked_metric(metric)],
        ascending=not maximize,
        param_keys=["seed"],
        state_tag=TAG_SOURCE_TRIAL,  # the column says which trial each replicate repeats
        curve_metric="val_acc1",
        search_filter=role_filter(ROLE_REPLICATE),
    )
    write_study_view(tracker, experiment, view, key=replicates_view_key(study_name))


def confirmation_rows(confirmation: Confirmation) -> tuple[list[str], list[list[str]]]:
    """The ranking as a header and rows: trial, each seed's value, mean ± 95% interval (accuracies in %)."""
    scale, _ = _scale(confirmation.metric)
    head = ["rank", "trial", *(f"seed {s}" for s in confirmation.seeds), f"mean {confirmation.metric} ± 95%"]
    rows = [
        [
            str(i),
            str(r.trial),
            *(f"{scale * v:.2f}" for v in r.values),
            f"{scale * r.mean:.2f} ± {scale * r.half_width:.2f}",
        ]
        for i, r in enumerate(confirmation.ranked, start=1)
    ]
    return head, rows


def confirmation_table(confirmation: Confirmation) -> Any:
    """A rich table of the ranking, titled with the statement."""
    from rich.table import Table

    head, rows = confirmation_rows(confirmation)
    table = Table(title=f"seed confirmation: {confirmation.statement}", title_justify="left")
    for column in head:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def candidates(study: optuna.Study, *, top: int, seeds: int) -> list[FrozenTrial]:
    """The trials ``confirm_top`` would replicate; a study or request it cannot confirm is one HvitError."""
    if len(study.directions) > 1:
        raise HvitError("--confirm ranks one objective: it needs a single-objective study")
    if top < 2 or seeds < 2:
        raise HvitError("--confirm needs --top 2 or more and --seeds 2 or more (an interval needs 2 values)")
    record = StudyRecord.of(study)
    chosen = record.best(top)
    if len(chosen) < 2:
        raise HvitError(f"study {study.study_name!r} has {len(chosen)} complete trial(s): --confirm needs 2")
    record.runs()  # refuses a study without MLflow runs
    if any(not t.user_attrs.get(ATTR_RUN_ID) for t in chosen):
        raise record.not_tracked()
    return chosen


def _trial_config(tracker: Any, trial: FrozenTrial, folder: Path, overrides: dict[str, Any]) -> Any:
    """The trial's full resolved config, from its checkpoint, with no test evaluation and nothing saved."""
    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.config import build_config

    try:
        saved = load_checkpoint(tracker.download_checkpoint(trial.user_attrs[ATTR_RUN_ID], folder / str(trial.number)))
    except HvitError as err:
        raise HvitError(f"trial {trial.number}: {err}") from None
    layer = {"evaluate_test": False, "save_final": False, "checkpoint_path": None}
    return build_config(saved.config.model_dump(mode="json"), layer, overrides, source=f"trial {trial.number}")


def _replicate(
    tracker: Any,
    study: optuna.Study,
    trial: FrozenTrial,
    base: Any,
    seed: int,
    metric: str,
    parent: str,
    experiment: str,
    splits_cache: dict[str, Any],
    progress: Callable[[int, int], Sequence[Any]] | None,
) -> float:
    """One replicate: the trial's config with a new training seed, on the trial's own split; returns its value."""
    from hvit_sweeps.config import flatten_config
    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.keys import cost_metric
    from hvit_sweeps.train import train

    key = base.data.model_dump_json() + f":{base.seed}"
    if key not in splits_cache:  # the split is the trial's: fixed by its own seed, not the replicate's
        splits_cache[key] = load_dataset(base.data, seed=base.seed)
    splits = splits_cache[key]
    config = base.model_copy(update={"seed": seed})
    run_id = tracker.create_child_run(
        experiment,
        parent,
        name=f"replicate-trial-{trial.number}-seed-{seed}",
        tags={
            TAG_ROLE: ROLE_REPLICATE,
            TAG_STUDY: study.study_name,
            TAG_SOURCE_TRIAL: str(trial.number),
            TAG_SOURCE_RUN: trial.user_attrs[ATTR_RUN_ID],
            TAG_SEED: str(seed),
            TAG_DATASET: splits.info.label,
            TAG_DATASET_HASH: splits.fingerprint,
            TAG_HOST: socket.gethostname(),
        },
    )
    tracker.log_params(run_id, flatten_config(config))
    callbacks = [_EpochLogger(tracker, run_id), *(progress(trial.number, seed) if progress else ())]
    try:
        result = train(config, callbacks=callbacks, splits=splits, best_checkpoint="at_end")
    except BaseException as err:
        tracker.end_run(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    scores = {**result.best_metrics, **result.model_stats, **result.cost}
    final = {
        **{best_metric(k): v for k, v in result.best_metrics.items()},
        **{cost_metric(k): v for k, v in result.cost.items()},
    }
    tracker.log_metrics(run_id, final, step=result.epochs_run)
    tracker.end_run(run_id, "FINISHED", tags={TAG_TRIAL_STATE: "COMPLETE"})
    return float(scores[metric])


class _EpochLogger(Callback):
    """Logs each epoch of a replicate to its run."""

    def __init__(self, tracker: Any, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.tracker.log_metrics(self.run_id, report.metrics, step=report.epoch)
        return None
