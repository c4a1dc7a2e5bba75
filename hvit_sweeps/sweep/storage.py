"""Optuna storage: opening a storage URL, and failing the trials of workers that died.

Storage URLs:

- none: a journal file, ``mlruns/optuna.journal`` (safe for several local processes;
  a torn last record is set aside, see :mod:`~hvit_sweeps.sweep.journal`);
- ``journal:PATH``: a journal file elsewhere;
- ``redis://HOST:PORT/DB``: a journal on Redis;
- ``postgresql://...``, ``mysql://...``, ``sqlite:///...``: Optuna's RDB storage, with
  heartbeats so that a killed worker's trial is failed and retried, and calls that
  wait out a database restart (:mod:`~hvit_sweeps.sweep.reconnect`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hvit_sweeps.errors import HvitError, SweepFault, first_line
from hvit_sweeps.keys import (
    ATTR_HEARTBEAT,
    ATTR_HOST,
    ATTR_PID,
    ATTR_RUN_ID,
    JOURNAL_FILE,
    TAG_FAILURE,
    TRIAL_RUN_ENDS,
)
from hvit_sweeps.sweep.faults import machine_fault, pid_alive
from hvit_sweeps.sweep.journal import HealingJournalBackend
from hvit_sweeps.sweep.reconnect import DEFAULT_OUTAGE_LIMIT, ReconnectingRDBStorage
from hvit_sweeps.tracking import Tracker

__all__ = [
    "MAX_RETRIES",
    "OUTAGE_ENV",
    "already_retried",
    "close_orphan_runs",
    "open_storage",
    "recover_stale_trials",
    "retry_trial",
    "stale_handler",
    "trial_id",
]

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]
OUTAGE_ENV = "HVIT_STORAGE_OUTAGE"  # seconds a database may stay away before the sweep stops


def open_storage(
    url: str | None,
    *,
    root: Path,
    heartbeat: int = 60,
    on_stale: StaleCallback | None = None,
) -> BaseStorage:
    """Open (and so check) the Optuna storage a URL names; see the module docstring.

    Raises:
        SweepFault: The journal's disk is full, read-only or failing.
    """
    from optuna.storages.journal import JournalRedisBackend

    if url is None or url.startswith("journal:"):
        path = Path(url[len("journal:") :]) if url else root / JOURNAL_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(HealingJournalBackend(path))
        except OSError as err:
            fault = machine_fault(err, where=path)
            if fault is None:
                raise
            raise SweepFault(fault) from None
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    try:
        if scheme == "redis":
            backend = JournalRedisBackend(url)
            _ping_redis(url)
            return optuna.storages.JournalStorage(backend)
        if scheme in ("postgresql", "postgres", "mysql", "sqlite"):
            return ReconnectingRDBStorage(
                url,
                where=_redact(url),
                outage_limit=_outage_limit(),
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * 3,
                heartbeat_stale_trial_callback=on_stale,
            )
    except Exception as err:  # noqa: BLE001 - drivers raise many kinds; all mean "unusable"
        reason = first_line(err)
        raise HvitError(
            f"--storage {_redact(url)}: cannot open the Optuna storage ({reason}): check the URL "
            "and that the database is up (docker compose up -d postgres)"
        ) from None
    raise HvitError(
        f"--storage {_redact(url)}: unknown scheme {scheme!r}: use postgresql://USER@HOST/DB, "
        "sqlite:///PATH.db, journal:PATH or redis://HOST:6379/0"
    )


def _outage_limit() -> float:
    text = os.environ.get(OUTAGE_ENV, "")
    try:
        return float(text) if text else DEFAULT_OUTAGE_LIMIT
    except ValueError:
        raise HvitError(f"{OUTAGE_ENV}={text!r}: seconds, e.g. 120") from None


def _ping_redis(url: str) -> None:
    """Fail now, not mid-sweep, on an unreachable Redis.

    JournalRedisBackend does not connect in its constructor, and its client is
    private, so a client of our own on the same URL asks instead.
    """
    import redis

    with redis.Redis.from_url(url) as client:
        client.ping()


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


def trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` in ``study``.

    Trial and FrozenTrial keep this id private (``_trial_id``); the storage's
    public lookups find it from the study's name and the trial's number.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


# -- stale trials -----------------------------------------------------------------------


def stale_handler(tracker: Tracker) -> StaleCallback:
    """Retry a dead worker's trial and close its MLflow run; the RDB heartbeat calls this."""

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        retry_trial(study, trial)
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id:
            tracker.end_trial(run_id, trial.number, "FAIL", tags={TAG_FAILURE: "worker died (stale trial); retried"})

    return on_stale


MAX_RETRIES = 3  # a config stopped or killed this often is not run again


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue ``trial``'s config to run again, as Optuna's heartbeat retry does; False past :data:`MAX_RETRIES`.

    The copy is WAITING, so the next ask in any process takes it before drawing a new
    config, and it carries Optuna's retry marks, so it is never surplus and the total
    stays exact. One that exists already (its stopped worker queued it) is not doubled.
    """
    if already_retried(study, trial.number):
        return True
    if len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) >= MAX_RETRIES:
        return False
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)
    return True


def already_retried(study: optuna.Study, number: int) -> bool:
    """Whether a retry of trial ``number`` exists (Optuna's retry marks list the trial each copy retries last).

    A stopped worker queues its trial's retry, then records the trial's FAIL; when it dies
    between the two, the next `run` finds the trial RUNNING with a dead owner. Retrying it
    again would run one config twice.
    """
    return any(
        RetryHeartbeatStaleTrialCallback.retry_history(t)[-1:] == [number] for t in study.get_trials(deepcopy=False)
    )


def recover_stale_trials(study: optuna.Study, storage: BaseStorage, tracker: Tracker, *, heartbeat: int) -> list[int]:
    """Fail and retry RUNNING trials whose worker is gone.

    On RDB storage Optuna's heartbeat decides first. Journal storages have no
    heartbeat, so on every storage a trial is also stale when its worker ran on
    this host and that process is dead, or when its last epoch report is older
    than 20 heartbeats.

    Args:
        storage: The storage ``study`` was opened on.

    Returns:
        The numbers of the trials failed by the second check.
    """
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)  # also runs at each ask; now, so the target counts are true
    on_stale = stale_handler(tracker)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _owner_gone(trial, grace=heartbeat * 20):
            continue
        try:
            storage.set_trial_state_values(trial_id(storage, study, trial.number), TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        on_stale(study, trial)
        recovered.append(trial.number)
    return recovered


def close_orphan_runs(study: optuna.Study, tracker: Tracker) -> list[str]:
    """Close trial runs MLflow still shows as RUNNING although Optuna has ended their trial.

    That happens when the MLflow server was down as the trial ended: Optuna has the
    state, MLflow missed the call. The run is closed with the state Optuna recorded.
    """
    closed = []
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if trial.state == TrialState.RUNNING or not run_id or tracker.run_status(run_id) != "RUNNING":
            continue
        state = trial.state.name if trial.state.name in TRIAL_RUN_ENDS else "FAIL"
        tracker.end_trial(run_id, trial.number, state, tags={TAG_FAILURE: _ORPHAN_REASON})
        closed.append(run_id)
    return closed


_ORPHAN_REASON = "closed on resume: the run missed its trial's end (tracking server unreachable then)"


def _owner_gone(trial: FrozenTrial, *, grace: float) -> bool:
    attrs = trial.user_attrs
    if attrs.get(ATTR_HOST) == socket.gethostname() and ATTR_PID in attrs:
        return not pid_alive(int(attrs[ATTR_PID]))
    seen = attrs.get(ATTR_HEARTBEAT)
    return seen is not None and time.time() - float(seen) > grace
