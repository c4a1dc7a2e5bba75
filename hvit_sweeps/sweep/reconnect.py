"""Optuna's RDB storage that waits out a database restart instead of ending the sweep.

SQLAlchemy's ``pool_pre_ping`` replaces a connection the server dropped before it
is used, but a call made while the server is down, restarting or refusing new
sessions still fails, and Optuna retries nothing but deadlocks. Here every
storage call that fails for a lost connection is retried every few seconds,
with one line when the database goes away and one when it answers again, until
``outage_limit`` seconds have passed: then the sweep ends as a
:class:`~hvit_sweeps.errors.SweepFault`, as for a full disk. A stop request
(Ctrl-C, SIGTERM, the parent `run` gone) ends the wait at once.

A write whose commit was cut off may have been applied; a retried
``set_trial_state_values`` that finds its trial already in the state it was
setting counts as done rather than as a conflict.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hvit_sweeps import interrupt
from hvit_sweeps.errors import SweepFault, first_line

__all__ = ["DEFAULT_OUTAGE_LIMIT", "ReconnectingRDBStorage", "connection_lost"]

DEFAULT_OUTAGE_LIMIT = 120.0  # seconds; a database restart takes a few
_PAUSES = (0.5, 1.0, 2.0, 3.0)  # then every 3 s: short enough to notice the return quickly

# Every storage call that goes to the database; the private ones are what Optuna's cache and heartbeat call.
_RETRIED = [
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
]

F = TypeVar("F", bound=Callable[..., Any])


def connection_lost(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps) says the database connection is gone or refused."""
    from sqlalchemy import exc

    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, exc.DisconnectionError):
            return True
        if isinstance(link, exc.DBAPIError) and (
            link.connection_invalidated or isinstance(link, (exc.OperationalError, exc.InterfaceError))
        ):
            return not _disk_full(link)
        link = link.__cause__ or link.__context__
    return False


def _disk_full(err: BaseException) -> bool:
    text = str(err).lower()
    return "disk is full" in text or "no space left" in text or "readonly database" in text


class _Outage:
    """When the database went away (shared by the threads of one storage), and the lines about it."""

    def __init__(self, where: str, limit: float) -> None:
        self.where, self.limit = where, limit
        self.since: float | None = None
        self.lock = threading.Lock()

    def failed(self, err: BaseException) -> None:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                _say(f"storage: the database at {self.where} is not answering; retrying for up to {self.limit:.0f} s")
            waited = time.monotonic() - self.since
        if waited > self.limit:
            raise SweepFault(
                f"the database at {self.where} has not answered for {waited:.0f} s ({_first_line(err)}): start it"
            ) from None

    def answered(self) -> None:
        if self.since is None:
            return
        with self.lock:
            if self.since is not None:
                _say(f"storage: the database answers again, after {time.monotonic() - self.since:.0f} s")
                self.since = None


class ReconnectingRDBStorage(RDBStorage):
    """An :class:`~optuna.storages.RDBStorage` whose calls wait out a lost connection (module docstring)."""

    def __init__(self, url: str, *, where: str, outage_limit: float = DEFAULT_OUTAGE_LIMIT, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._outage = _Outage(where, outage_limit)
        _quiet_optuna_fallback()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_outage", None)  # a lock does not pickle
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._outage = _Outage("the database", DEFAULT_OUTAGE_LIMIT)

    def _retry(self, call: Callable[[], Any]) -> Any:
        for attempt in range(1_000_000):
            try:
                result = call()
            except Exception as err:
                if not connection_lost(err):
                    raise
                self._outage.failed(err)
                _pause(_PAUSES[min(attempt, len(_PAUSES) - 1)])
                continue
            self._outage.answered()
            return result
        raise AssertionError("unreachable")

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        tries = 0

        def call() -> bool:
            nonlocal tries
            tries += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if tries > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True  # the cut-off first try was committed after all
                raise

        return bool(self._retry(call))


def _retrying(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retry(lambda: method(self, *args, **kwargs))

    return wrapper  # type: ignore[return-value]


for _name in _RETRIED:
    setattr(ReconnectingRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))


def _pause(seconds: float) -> None:
    """Sleep, but give up at once when a stop was asked for: a scheduler's SIGTERM must not wait for the server."""
    deadline = time.monotonic() + seconds
    with interrupt.waiting_on_server():
        while (left := deadline - time.monotonic()) > 0:
            interrupt.check()  # the parent `run` gone, or a signal to another thread's wait
            time.sleep(min(left, 0.2))


def _first_line(err: BaseException) -> str:
    """The driver's own words (``connection refused``), not Optuna's guess about a failed commit."""
    from sqlalchemy import exc

    link: BaseException | None = err
    while link is not None:
        if isinstance(link, exc.DBAPIError) and link.orig is not None:
            err = link.orig
            break
        link = link.__cause__ or link.__context__
    return first_line(err, limit=160)


class _QuietFallback(logging.Filter):
    """Optuna warns, with the SQL, that it falls back to a slower query when the connection drops; we say it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Caught an error from sqlalchemy")


def _quiet_optuna_fallback() -> None:
    logger = logging.getLogger("optuna.storages._rdb.storage")
    if not any(isinstance(f, _QuietFallback) for f in logger.filters):
        logger.addFilter(_QuietFallback())


def _say(line: str) -> None:
    # stderr, as the tracking outage notice: a live display prints it above itself; a worker's goes to its log.
    print(line, file=sys.stderr, flush=True)
