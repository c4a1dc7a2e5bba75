"""Running a study: connect to it, run workers on it, and close it.

Optuna's storage is the distributed engine: every worker, in this process or on
another machine, loads the same study and asks it for trials. The study's user
attributes hold the shared facts: the trial target, the MLflow experiment and
parent run, and a fingerprint of the definition so that two different searches
never share a name.

Modules: :mod:`~hvit_sweeps.sweep.state` (the sweep and the opened study),
:mod:`~hvit_sweeps.sweep.record` (one view of a study: its trials, counts and the one ranking),
:mod:`~hvit_sweeps.sweep.storage` (storage URLs and stale trials),
:mod:`~hvit_sweeps.sweep.objective` (one trial) and
:mod:`~hvit_sweeps.sweep.workers` (the trial loop and worker processes).
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

import optuna

from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import (
    ATTR_EXPERIMENT,
    ATTR_FINGERPRINT,
    ATTR_PARENT,
    ATTR_TARGET,
    HP_PREFIX,
    PARAM_DATASET,
    PARAM_MAX_EPOCHS,
    PARAM_OBJECTIVES,
    PARAM_PRUNER,
    PARAM_SAMPLER,
    PARAM_SAMPLER_SEED,
    PARAM_STUDY_NAME,
    STUDY_FILE_DIR,
    TAG_RANK,
    TAG_STUDY_FILE,
    TAG_TRIAL_STATE,
    cost_metric,
)
from hvit_sweeps.metrics import tracked_metric, view_metrics
from hvit_sweeps.mlflow_view import StudyView, view_key, write_study_view
from hvit_sweeps.sweep.ranks import write_ranks
from hvit_sweeps.sweep.state import (
    Connected,
    Sweep,
    SweepDisplay,
    study_summary,
    trial_counts,
)
from hvit_sweeps.sweep.storage import (
    close_orphan_runs,
    open_storage,
    recover_stale_trials,
    stale_handler,
)

if TYPE_CHECKING:
    from hvit_sweeps.sweep.workers import WorkerSummary, launch_workers, run_worker, worker_plan

# The worker side imports torch (training); it loads on first use (PEP 562), so that
# `show`, `best` and `report` open a study without importing torch.
_WORKER_NAMES = ("WorkerSummary", "launch_workers", "run_worker", "worker_plan")

__all__ = [
    "Connected",
    "Sweep",
    "SweepDisplay",
    "WorkerSummary",
    "close_study_run",
    "connect",
    "finalize",
    "launch_workers",
    "open_storage",
    "run_worker",
    "trial_counts",
    "worker_plan",
]


def __getattr__(name: str) -> Any:
    if name not in _WORKER_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.workers"), name)


# Heartbeat retries and metric names are marked experimental; they are what we want.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def connect(
    sweep: Sweep,
    *,
    add_trials: int | None = None,
    workers: int = 1,
) -> Connected:
    """Create or load the study, settle its target and its MLflow parent run.

    Args:
        add_trials: For ``run``: raise the target to finished + this many. None keeps
            the stored target (``worker``, ``run --resume``), or uses the study file's
            ``trials`` for a study that has none yet.
        workers: How many processes will share the storage (SQLite refuses several).
    """
    if workers > 1 and sweep.storage_url and sweep.storage_url.startswith("sqlite"):
        raise HvitError(
            "--storage sqlite is not safe for parallel workers: omit --storage for the journal "
            "file, or use postgresql://"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our display says what Optuna would log
    tracker = sweep.tracker
    if not tracker.local:
        tracker.check_reachable()  # a server or database of the user's: asked before anything is created
    storage = open_storage(
        sweep.storage_url, root=sweep.root, heartbeat=sweep.heartbeat, on_stale=stale_handler(tracker)
    )
    if tracker.local:
        tracker.check_reachable()  # creates the embedded store, once the Optuna storage has opened
    study = optuna.create_study(
        study_name=sweep.study_name,
        storage=storage,
        directions=sweep.spec.directions,
        sampler=sweep.spec.make_sampler(),  # keyed to trial numbers: no process repeats another's draws
        pruner=sweep.spec.make_pruner(),
        load_if_exists=True,
    )
    _check_definition(study, sweep)
    if study.metric_names is None:
        study.set_metric_names([o.metric for o in sweep.spec.objectives])
    recover_stale_trials(study, storage, tracker, heartbeat=sweep.heartbeat)
    close_orphan_runs(study, tracker)
    target = _settle_target(study, sweep, add_trials)
    experiment_id = tracker.experiment_id(sweep.study_name)
    parent, created = tracker.parent_run(experiment_id, sweep.study_name, tags={TAG_STUDY_FILE: sweep.spec_path.name})
    if created:
        _describe_parent(sweep, parent)
        write_view(sweep, experiment_id)
    else:
        tracker.reopen(parent)  # trials are about to run under it, also on --resume
    if study.user_attrs.get(ATTR_PARENT) != parent:
        study.set_user_attr(ATTR_PARENT, parent)
        study.set_user_attr(ATTR_EXPERIMENT, experiment_id)
    return Connected(study=study, storage=storage, experiment_id=experiment_id, parent_run_id=parent, target=target)


def _settle_target(study: optuna.Study, sweep: Sweep, add_trials: int | None) -> int:
    """The study's trial target, stored in the study so that every worker stops at it."""
    stored = study.user_attrs.get(ATTR_TARGET)
    if add_trials is not None:
        target = trial_counts(study)["finished"] + add_trials
    else:
        target = int(stored) if stored is not None else sweep.spec.trials
    if stored != target:
        study.set_user_attr(ATTR_TARGET, target)
    return target


def _check_definition(study: optuna.Study, sweep: Sweep) -> None:
    """Refuse to add trials of a different search, or on different data, to a study."""
    data = sweep.base_config.data
    definition = f"{sweep.spec.fingerprint}:{data.dataset}"
    stored = study.user_attrs.get(ATTR_FINGERPRINT)
    if stored is None:
        study.set_user_attr(ATTR_FINGERPRINT, definition)
    elif stored != definition:
        raise HvitError(
            f"study {sweep.study_name!r} already exists with another definition or dataset "
            f"(stored {stored}, now {definition}): pass --study-name NEW to start a separate study"
        )


def _describe_parent(sweep: Sweep, parent: str) -> None:
    spec = sweep.spec
    params = {
        PARAM_STUDY_NAME: sweep.study_name,
        PARAM_SAMPLER: spec.sampler.type,
        PARAM_SAMPLER_SEED: spec.sampler.seed,
        PARAM_PRUNER: spec.pruner.type,
        PARAM_OBJECTIVES: ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
        PARAM_MAX_EPOCHS: spec.max_epochs,
        PARAM_DATASET: sweep.base_config.data.dataset,
    }
    sweep.tracker.log_params(parent, params)
    sweep.tracker.log_file(parent, sweep.spec_path, STUDY_FILE_DIR)


def close_study_run(sweep: Sweep, connected: Connected, status: str) -> None:
    """End the parent run after a stop or a crash, so it is never left RUNNING; `run --resume` reopens it.

    A server that does not answer now is not waited for (MLflow would retry for
    minutes after the user asked to stop): `run --resume` closes the run later.
    """
    try:
        running = trial_counts(connected.study)["running"]
    except Exception:  # noqa: BLE001 - the storage is what failed (a SweepFault at once): `run --resume` closes it
        return
    if running == 0 and sweep.tracker.reachable():
        try:
            sweep.tracker.end_run(connected.parent_run_id, status)
        except Exception:  # noqa: BLE001 - the server went away since: `run --resume` reopens and closes the run
            pass


def write_view(sweep: Sweep, experiment_id: str) -> None:
    """The study's saved runs-table view in MLflow: its trials, best first, with the searched params."""
    spec = sweep.spec
    objectives = [tracked_metric(o.metric) for o in spec.objectives]
    view = StudyView(
        name=f"{sweep.study_name}: trials, best first",
        objectives=objectives,
        ascending=spec.objectives[0].direction == "minimize",
        # The stage count first: the axis that explains the depth axes beside it.
        param_keys=[
            f"{HP_PREFIX}{name}" for name in sorted(spec.param_names(), key=lambda n: n != "stages.num_stages")
        ],
        extra_metrics=list(view_metrics()),
        state_tag=TAG_TRIAL_STATE,
        rank_tag=TAG_RANK,
        curve_metric="val_acc1",
        cost_metric=cost_metric("device_seconds"),
    )
    write_study_view(sweep.tracker, experiment_id, view, key=view_key(sweep.study_name))


def finalize(sweep: Sweep, connected: Connected, *, plots: bool = True) -> list[str]:
    """Log best-so-far metrics and (unless drawn elsewhere) the study plots to the parent run, then close it."""
    study = connected.study
    tracker = sweep.tracker
    counts = trial_counts(study)
    metrics, step = study_summary(study)
    tracker.log_metrics(connected.parent_run_id, metrics, step=step)
    write_ranks(tracker, study, every=True)
    write_view(sweep, connected.experiment_id)
    from hvit_sweeps.sweep.background import log_plots  # matplotlib: only when a study ends

    names = log_plots(sweep, connected) if plots else []
    if counts["running"] == 0 and counts["waiting"] == 0:
        tracker.end_run(connected.parent_run_id, "FINISHED")
    return names
