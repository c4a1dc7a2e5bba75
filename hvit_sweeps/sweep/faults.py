"""Machine faults during a sweep: a full or read-only disk, an I/O error, a database that stays away.

Such an error can surface anywhere: in Optuna's journal append, in MLflow's SQLite
store ("database or disk is full"), in an artifact copy, wrapped by SQLAlchemy or
MLflow. :func:`machine_fault` finds it in an exception's chain and words it as the
one line a :class:`~hvit_sweeps.errors.SweepFault` carries.

A full disk leaves no room to record that the sweep stopped: closing the trial
and the MLflow runs is itself a write. :class:`SpaceReserve` keeps a small
ballast file under ``--root`` while a worker runs and deletes it at the fault,
so that those last writes fit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from pathlib import Path

__all__ = ["FAULT_ERRNOS", "SpaceReserve", "chain", "machine_fault", "pid_alive", "quiet_store_errors"]

# errno -> what the user reads, and what to do before `--resume`.
FAULT_ERRNOS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota"),
    errno.EFBIG: ("file too large", "free space or move --root"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.EACCES: ("permission denied", "give this user write access"),
    errno.EPERM: ("operation not permitted", "give this user write access"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n)"),
    errno.ENFILE: ("too many open files in the system", "close other programs' files"),
}
# Errors that carry no errno but say the same: SQLite's, through SQLAlchemy and MLflow.
_MESSAGES = {
    "database or disk is full": errno.ENOSPC,
    "no space left on device": errno.ENOSPC,
    "attempt to write a readonly database": errno.EROFS,
    "read-only file system": errno.EROFS,
    "disk i/o error": errno.EIO,
}


def machine_fault(err: BaseException, *, where: Path | str) -> str | None:
    """The one-line statement of the machine fault behind ``err``, or None when it is not one.

    Args:
        err: Searched with its ``__cause__``/``__context__`` chain.
        where: Named when the error names no file (SQLite's do not).
    """
    for link in chain(err):
        if isinstance(link, OSError) and link.errno in FAULT_ERRNOS:
            return _statement(link.errno, link.filename or where)
    for link in chain(err):
        text = str(link).lower()
        for phrase, code in _MESSAGES.items():
            if phrase in text:
                return _statement(code, where)
    return None


def _statement(code: int, path: object) -> str:
    words, fix = FAULT_ERRNOS[code]
    name = os.fsdecode(path) if isinstance(path, bytes) else path
    return f"{words} ({errno.errorcode[code]}) writing {name}: {fix}"


def chain(err: BaseException) -> list[BaseException]:
    """``err`` and every error it wraps or was raised while handling, nearest first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        link = todo.pop(0)
        if link is None or any(link is s for s in seen) or len(seen) > 50:
            continue
        seen.append(link)
        todo += [link.__cause__, link.__context__]
    return seen


def quiet_store_errors() -> None:
    """Keep MLflow's SQL store from logging each database error with its traceback.

    It logs, then raises; the raise reaches the worker, which says it in one line.
    """
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


class SpaceReserve:
    """A ballast file that gives back room on the disk of ``folder`` when a fault needs it."""

    SIZE = 256 * 1024

    def __init__(self, folder: Path) -> None:
        prefix = f".hvit-reserve-{socket.gethostname()}-"
        for stale in folder.glob(f"{prefix}*"):  # left by a killed worker of this host
            pid = stale.name.removeprefix(prefix)
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    stale.unlink()
        self.path = folder / f"{prefix}{os.getpid()}"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.SIZE)
            finally:
                os.close(fd)
        except OSError:  # no room, or not ours to write: nothing to give back later
            self.release()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
