"""Running a study: Optuna storage, the trial objective, workers and stale trials.

Optuna's storage is the distributed engine: every worker, in this process or on
another machine, loads the same study and asks it for trials. The study's user
attributes hold the shared facts: the trial target, the MLflow experiment and
parent run, and a fingerprint of the definition so that two different searches
never share a name.

Storage URLs:

- none: a journal file, ``mlruns/optuna.journal`` (safe for several local processes);
- ``journal:PATH``: a journal file elsewhere;
- ``redis://HOST:PORT/DB``: a journal on Redis;
- ``postgresql://...``, ``mysql://...``, ``sqlite:///...``: Optuna's RDB storage, with
  heartbeats so that a killed worker's trial is failed and retried.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hvit_sweeps.config import TrainConfig
from hvit_sweeps.data import DatasetSplits, load_dataset
from hvit_sweeps.errors import HvitError
from hvit_sweeps.study import EPOCH_METRICS, StudySpec
from hvit_sweeps.tracking import CHECKPOINT_ARTIFACT, Tracker
from hvit_sweeps.train import Callback, EpochReport, TrainResult, train

__all__ = [
    "Sweep",
    "SweepDisplay",
    "connect",
    "finalize",
    "launch_workers",
    "open_storage",
    "run_worker",
    "trial_counts",
]

# Heartbeat retries and metric names are marked experimental; they are what we want.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

ATTR_TARGET = "hvit.target_trials"
ATTR_PARENT = "hvit.mlflow_parent_run_id"
ATTR_EXPERIMENT = "hvit.mlflow_experiment_id"
ATTR_FINGERPRINT = "hvit.definition"
ATTR_RUN_ID = "mlflow_run_id"
MAX_FAILURES_IN_ROW = 5  # a sweep whose every trial crashes stops instead of spinning


class SweepDisplay(Protocol):
    """What a worker tells the screen; :class:`~hvit_sweeps.console.SweepDashboard` implements it."""

    def refresh(self, study: optuna.Study) -> None: ...

    def trial_callback(self, study: optuna.Study, trial_number: int) -> Callback: ...


@dataclass
class Sweep:
    """A study definition plus where it runs; resolved and checked once per process."""

    spec: StudySpec
    spec_path: Path
    study_name: str
    storage_url: str | None
    tracking_uri: str | None
    root: Path
    cli: dict[str, Any] = field(default_factory=dict)
    heartbeat: int = 60
    tracker: Tracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.tracking_uri, root=self.root)

    @property
    def base_config(self) -> TrainConfig:
        return self.spec.trial_config({}, self.cli)


# -- storage ----------------------------------------------------------------------------


def open_storage(
    url: str | None,
    *,
    root: Path,
    heartbeat: int = 60,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """Open (and so check) the Optuna storage a URL names; see the module docstring."""
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if url is None or url.startswith("journal:"):
        path = Path(url[len("journal:"):]) if url else root / "optuna.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    try:
        if scheme == "redis":
            backend = JournalRedisBackend(url)
            backend._redis.ping()  # the constructor does not connect; fail now, not mid-sweep
            return optuna.storages.JournalStorage(backend)
        if scheme in ("postgresql", "postgres", "mysql", "sqlite"):
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * 3,
                heartbeat_stale_trial_callback=on_stale,
            )
    except Exception as err:  # noqa: BLE001 - drivers raise many kinds; all mean "unusable"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise HvitError(
            f"--storage {_redact(url)}: cannot open the Optuna storage ({reason}): check the URL "
            "and that the database is up (docker compose up -d postgres)"
        ) from None
    raise HvitError(
        f"--storage {_redact(url)}: unknown scheme {scheme!r}: use postgresql://USER@HOST/DB, "
        "sqlite:///PATH.db, journal:PATH or redis://HOST:6379/0"
    )


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


# -- connecting to a study --------------------------------------------------------------


@dataclass
class Connected:
    study: optuna.Study
    experiment_id: str
    parent_run_id: str
    target: int


def connect(
    sweep: Sweep,
    *,
    add_trials: int | None = None,
    worker_index: int = 0,
    workers: int = 1,
) -> Connected:
    """Create or load the study, settle its target and its MLflow parent run.

    Args:
        add_trials: For ``run``: raise the target to finished + this many. None keeps
            the stored target (``worker``, ``run --resume``), or uses the study file's
            ``trials`` for a study that has none yet.
        worker_index: Offsets the sampler seed, so parallel workers draw differently.
        workers: How many processes will share the storage (SQLite refuses several).
    """
    if workers > 1 and sweep.storage_url and sweep.storage_url.startswith("sqlite"):
        raise HvitError(
            "--storage sqlite is not safe for parallel workers: omit --storage for the journal "
            "file, or use postgresql://"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our display says what Optuna would log
    sweep.tracker.check_reachable()
    tracker = sweep.tracker
    storage = open_storage(
        sweep.storage_url, root=sweep.root, heartbeat=sweep.heartbeat, on_stale=_stale_handler(tracker)
    )
    study = optuna.create_study(
        study_name=sweep.study_name,
        storage=storage,
        directions=sweep.spec.directions,
        sampler=sweep.spec.make_sampler(worker_index=worker_index),
        pruner=sweep.spec.make_pruner(),
        load_if_exists=True,
    )
    _check_definition(study, sweep)
    if study.metric_names is None:
        study.set_metric_names([o.metric for o in sweep.spec.objectives])
    recover_stale_trials(study, tracker, heartbeat=sweep.heartbeat)
    counts = trial_counts(study)
    stored = study.user_attrs.get(ATTR_TARGET)
    if add_trials is not None:
        target = counts["finished"] + add_trials
    else:
        target = int(stored) if stored is not None else sweep.spec.trials
    if stored != target:
        study.set_user_attr(ATTR_TARGET, target)
    experiment_id = tracker.experiment_id(sweep.study_name)
    parent, created = tracker.parent_run(
        experiment_id, sweep.study_name, tags={"hvit.study_file": sweep.spec_path.name}
    )
    if created:
        _describe_parent(sweep, parent)
    elif add_trials:
        tracker.reopen(parent)
    if study.user_attrs.get(ATTR_PARENT) != parent:
        study.set_user_attr(ATTR_PARENT, parent)
        study.set_user_attr(ATTR_EXPERIMENT, experiment_id)
    return Connected(study=study, experiment_id=experiment_id, parent_run_id=parent, target=target)


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
        "study.name": sweep.study_name,
        "study.sampler": spec.sampler.type,
        "study.sampler_seed": spec.sampler.seed,
        "study.pruner": spec.pruner.type,
        "study.objectives": ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
        "study.max_epochs": spec.max_epochs,
        "study.dataset": sweep.base_config.data.dataset,
    }
    from mlflow.entities import Param

    sweep.tracker.client.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()])
    sweep.tracker.log_file(parent, sweep.spec_path, "study")


def trial_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    return {
        "complete": count[TrialState.COMPLETE],
        "pruned": count[TrialState.PRUNED],
        "failed": count[TrialState.FAIL],
        "running": count[TrialState.RUNNING],
        "waiting": count[TrialState.WAITING],
        "finished": count[TrialState.COMPLETE] + count[TrialState.PRUNED],
    }


# -- stale trials -----------------------------------------------------------------------


def _stale_handler(tracker: Tracker) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Retry a dead worker's trial and close its MLflow run; the RDB heartbeat calls this."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id:
            tracker.end_run(run_id, "FAILED", tags={"hvit.failure_reason": "worker died (stale trial); retried"})

    return on_stale


def recover_stale_trials(study: optuna.Study, tracker: Tracker, *, heartbeat: int) -> list[int]:
    """Fail and retry RUNNING trials whose worker is gone.

    On RDB storage Optuna's heartbeat decides. Journal storages have no heartbeat,
    so a trial is stale when its worker ran on this host and that process is dead,
    or when its last epoch report is older than 20 heartbeats.
    """
    storage = study._storage
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return []
    on_stale = _stale_handler(tracker)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _owner_gone(trial, grace=heartbeat * 20):
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        on_stale(study, trial)
        recovered.append(trial.number)
    return recovered


def _owner_gone(trial: FrozenTrial, *, grace: float) -> bool:
    attrs = trial.user_attrs
    if attrs.get("hvit.host") == socket.gethostname() and "hvit.pid" in attrs:
        return not _pid_alive(int(attrs["hvit.pid"]))
    seen = attrs.get("hvit.heartbeat")
    return seen is not None and time.time() - float(seen) > grace


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the objective ----------------------------------------------------------------------


class SurplusTrial(Exception):
    """Raised for a trial asked for after the target was already reached by others."""


class TrialReporter(Callback):
    """Logs each epoch to MLflow, reports it to Optuna, and stops pruned trials."""

    def __init__(self, trial: optuna.Trial, run_id: str, tracker: Tracker, spec: StudySpec) -> None:
        self.trial, self.run_id, self.tracker, self.spec = trial, run_id, tracker, spec
        self.pruned_at: int | None = None

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.tracker.log_metrics(self.run_id, report.metrics, step=report.epoch)
        self.trial.set_user_attr("hvit.epoch", report.epoch)
        self.trial.set_user_attr("hvit.heartbeat", time.time())
        metric = self.spec.objectives[0].metric
        if self.spec.multi_objective or metric not in EPOCH_METRICS:
            return None  # Optuna prunes single-objective studies only
        self.trial.report(report.metrics[metric], report.epoch)
        if self.trial.should_prune():
            self.pruned_at = report.epoch
            return f"pruned by the {self.spec.pruner.type} pruner at epoch {report.epoch}"
        return None


@dataclass
class Objective:
    """The Optuna objective: one trial is one call of :func:`~hvit_sweeps.train.train`."""

    sweep: Sweep
    connected: Connected
    splits: DatasetSplits
    display: SweepDisplay | None = None

    last_number: int = -1

    def __call__(self, trial: optuna.Trial) -> list[float]:
        study = self.connected.study
        self.last_number = trial.number
        if self._surplus(trial):
            trial.set_user_attr("hvit.surplus", True)
            raise SurplusTrial(f"trial {trial.number} is beyond the study's target")
        sampled = self.sweep.spec.suggest(trial)
        with tempfile.TemporaryDirectory(prefix="hvit-trial-") as tmp:
            config = self.sweep.spec.trial_config(
                sampled, {**self.sweep.cli, "checkpoint_path": str(Path(tmp) / "best.pth")}
            )
            run_id = self._start_run(trial, config, sampled)
            reporter = TrialReporter(trial, run_id, self.sweep.tracker, self.sweep.spec)
            callbacks: list[Callback] = [reporter]
            if self.display is not None:
                callbacks.append(self.display.trial_callback(study, trial.number))
            try:
                result = train(config, callbacks=callbacks, splits=self.splits, best_checkpoint="at_end")
            except KeyboardInterrupt:
                self.sweep.tracker.end_run(run_id, "KILLED", tags={"hvit.failure_reason": "interrupted (Ctrl-C)"})
                raise
            except BaseException as err:
                self._fail(run_id, err)
                raise
            return self._finish(trial, run_id, result, config.checkpoint_path)

    def _surplus(self, trial: optuna.Trial) -> bool:
        if _retry_of(trial) is not None:
            return False  # a retry of a dead worker's trial always runs
        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ahead = [t for t in self.connected.study.get_trials(deepcopy=False, states=alive) if t.number < trial.number]
        return len(ahead) >= self.connected.target

    def _start_run(self, trial: optuna.Trial, config: TrainConfig, sampled: dict[str, Any]) -> str:
        retry_of = _retry_of(trial)
        tags = {
            "hvit.dataset": self.splits.info.label,
            "hvit.dataset_hash": self.splits.fingerprint,
            "hvit.host": socket.gethostname(),
            **({"optuna.retry_of": str(retry_of)} if retry_of is not None else {}),
        }
        run_id = self.sweep.tracker.start_trial(
            experiment_id=self.connected.experiment_id,
            parent_run_id=self.connected.parent_run_id,
            study_name=self.sweep.study_name,
            trial_number=trial.number,
            config=config,
            sampled=sampled,
            tags=tags,
        )
        self.sweep.tracker.client.log_batch(
            run_id,
            params=[_param(f"dataset.{k}_size", v) for k, v in self.splits.sizes.items()],
        )
        for key, value in {
            ATTR_RUN_ID: run_id,
            "hvit.host": socket.gethostname(),
            "hvit.pid": os.getpid(),
            "hvit.heartbeat": time.time(),
            "hvit.epoch": 0,
            "hvit.epochs": config.epochs,
        }.items():
            trial.set_user_attr(key, value)
        return run_id

    def _fail(self, run_id: str, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}"[:1000]
        tracker = self.sweep.tracker
        tracker.log_text(run_id, "".join(traceback.format_exception(err)), "failure.txt")
        tracker.end_run(run_id, "FAILED", tags={"hvit.failure_reason": reason, "optuna.trial_state": "FAIL"})

    def _finish(self, trial: optuna.Trial, run_id: str, result: TrainResult, checkpoint: Path | None) -> list[float]:
        tracker = self.sweep.tracker
        final = {**result.model_stats, **{f"best_{k}": v for k, v in result.best_metrics.items()}, **result.test_metrics}
        tracker.log_metrics(run_id, final, step=result.epochs_run)
        tags = {"hvit.notes": "; ".join(result.notes)} if result.notes else {}
        if result.status != "completed":
            tags.update({"optuna.trial_state": "PRUNED", "hvit.stop_reason": result.reason})
            tags["optuna.pruned_at_epoch"] = str(result.epochs_run)
            tracker.end_run(run_id, "KILLED", tags=tags)
            raise optuna.TrialPruned(result.reason)
        values = self.sweep.spec.objective_values({**result.best_metrics, **result.model_stats})
        kept = self._keep_checkpoint(trial, run_id, values, checkpoint)
        tags.update({"optuna.trial_state": "COMPLETE", "hvit.checkpoint": "kept" if kept else "not kept (keep_top_k)"})
        tracker.end_run(run_id, "FINISHED", tags=tags)
        return values

    def _keep_checkpoint(self, trial: optuna.Trial, run_id: str, values: list[float], checkpoint: Path | None) -> bool:
        """Upload the trial's best checkpoint unless keep_top_k says it is not among the best."""
        top_k = self.sweep.spec.keep_top_k
        if checkpoint is None or not checkpoint.is_file():
            return False
        if top_k is None or self.sweep.spec.multi_objective:
            self.sweep.tracker.log_file(run_id, checkpoint, str(Path(CHECKPOINT_ARTIFACT).parent))
            return True
        sign = 1 if self.sweep.spec.directions[0] == "maximize" else -1
        done = self.connected.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = sorted([(v.values[0], v.user_attrs.get(ATTR_RUN_ID)) for v in done] + [(values[0], run_id)],
                        key=lambda item: -sign * item[0])
        keep = {rid for _, rid in ranked[:top_k]}
        if run_id not in keep:
            return False
        self.sweep.tracker.log_file(run_id, checkpoint, str(Path(CHECKPOINT_ARTIFACT).parent))
        for _, other in ranked[top_k:]:
            if other and other != run_id:
                self.sweep.tracker.delete_checkpoint(other)
                self.sweep.tracker.client.set_tag(other, "hvit.checkpoint", "deleted (keep_top_k)")
        return True


def _retry_of(trial: optuna.Trial) -> int | None:
    """The dead trial this one retries (set by RetryHeartbeatStaleTrialCallback), if any."""
    return trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value))


# -- workers ----------------------------------------------------------------------------


@dataclass
class WorkerSummary:
    ran: int
    reason: str


def run_worker(
    sweep: Sweep,
    connected: Connected,
    *,
    max_trials: int | None = None,
    timeout: float | None = None,
    display: SweepDisplay | None = None,
    splits: DatasetSplits | None = None,
) -> WorkerSummary:
    """Run trials until the study reaches its target, ``max_trials`` or ``timeout``.

    Each iteration is ``study.optimize(n_trials=1)``, so Optuna keeps the heartbeat
    and stale-trial handling; the target check before each ask, and the surplus
    check inside the objective, keep the total across workers exact.
    """
    study = connected.study
    config = sweep.base_config
    splits = splits if splits is not None else load_dataset(config.data, seed=config.seed)
    objective = Objective(sweep, connected, splits, display)
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = failures_in_row = 0
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our display and MLflow report trials
    while True:
        counts = trial_counts(study)
        if counts["finished"] + counts["running"] >= connected.target and not counts["waiting"]:
            reason = "target reached"
            break
        if max_trials is not None and ran >= max_trials:
            reason = f"ran --trials {max_trials}"
            break
        if deadline is not None and time.monotonic() >= deadline:
            reason = "timeout"
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
        ran += 1
        last = next((t for t in study.get_trials(deepcopy=False) if t.number == objective.last_number), None)
        failed = last is not None and last.state == TrialState.FAIL and not last.user_attrs.get("hvit.surplus")
        failures_in_row = failures_in_row + 1 if failed else 0
        if failures_in_row >= MAX_FAILURES_IN_ROW:
            raise HvitError(
                f"{failures_in_row} trials in a row failed; the last: "
                f"{_failure_reason(sweep, last)}: fix it and rerun with --resume"
            )
        _log_best_so_far(sweep, connected)
        if display is not None:
            display.refresh(study)
    return WorkerSummary(ran=ran, reason=reason)


def _failure_reason(sweep: Sweep, trial: FrozenTrial | None) -> str:
    run_id = trial.user_attrs.get(ATTR_RUN_ID) if trial else None
    if not run_id:
        return "no MLflow run was started"
    tags = sweep.tracker.client.get_run(run_id).data.tags
    return tags.get("hvit.failure_reason", "unknown (see the run's failure.txt)")


def _log_best_so_far(sweep: Sweep, connected: Connected) -> None:
    """Best value so far on the parent run, one point per finished trial."""
    counts = trial_counts(connected.study)
    best = _best_values(connected.study)
    if best:
        sweep.tracker.log_metrics(connected.parent_run_id, best, step=counts["finished"])


def worker_plan(*, workers: int | None, devices: Sequence[str] | None, trials_per_gpu: int) -> list[dict[str, str]]:
    """One environment per worker process: GPUs are assigned round-robin.

    Each process also gets an equal share of the CPU threads: several PyTorch
    processes that each spin up one thread per core slow each other down many
    times over (measured here: 1.3 s trials took 35 s with 3 unthrottled workers).
    """
    if devices:
        count = len(devices) * trials_per_gpu
        if workers is not None and workers != count:
            raise HvitError(
                f"--workers {workers} does not match --devices ({len(devices)}) x --trials-per-gpu "
                f"({trials_per_gpu}) = {count}: drop --workers"
            )
        plans = [{"CUDA_VISIBLE_DEVICES": devices[i % len(devices)]} for i in range(count)]
    else:
        plans = [{} for _ in range(workers or 1)]
    if len(plans) > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // len(plans)))
        plans = [{**plan, "OMP_NUM_THREADS": threads} for plan in plans]
    return plans


def launch_workers(
    plans: list[dict[str, str]],
    *,
    worker_args: list[str],
    log_dir: Path,
    poll: Callable[[], None],
) -> list[int]:
    """Start one ``hvit-sweep worker`` process per plan, poll until all exit; return codes.

    Ctrl-C reaches the workers too (same process group); each ends its trial cleanly.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, env in enumerate(plans):
        log = open(log_dir / f"worker-{index}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "hvit_sweeps", "worker", *worker_args, "--worker-index", str(index)]
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}), log))
    try:
        while any(p.poll() is None for p, _ in processes):
            poll()
            time.sleep(1.0)
    except KeyboardInterrupt:
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process, _ in processes:
            process.wait()
        raise
    finally:
        for _, log in processes:
            log.close()
    poll()
    return [p.returncode for p, _ in processes]


# -- the end of a study -----------------------------------------------------------------


def finalize(sweep: Sweep, connected: Connected) -> list[str]:
    """Log best-so-far metrics and the study plots to the parent run, then close it."""
    study = connected.study
    tracker = sweep.tracker
    counts = trial_counts(study)
    summary = {f"trials_{k}": float(v) for k, v in counts.items()}
    best = _best_values(study)
    tracker.log_metrics(connected.parent_run_id, {**summary, **best}, step=counts["finished"])
    from hvit_sweeps.plots import study_figures

    names = tracker.log_plots(connected.parent_run_id, study_figures(study, sweep.spec))
    if counts["running"] == 0 and counts["waiting"] == 0:
        tracker.end_run(connected.parent_run_id, "FINISHED")
    return names


def _best_values(study: optuna.Study) -> dict[str, float]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    if len(study.directions) == 1:
        return {"best_value": float(study.best_value), "best_trial": float(study.best_trial.number)}
    return {"pareto_size": float(len(study.best_trials))}
