"""The journal file: Optuna's JournalFileBackend under an flock, with a torn last record set aside.

A process killed while appending, or a disk that filled up mid-write, leaves a
last line without its newline. Optuna's reader skips such a line, but the next
append would be glued onto it, and from then on every reader fails on a line
that is not JSON. So a torn tail is cut off and kept in a side file beside the
journal (``optuna.journal.torn-<time>``), on open and before every append.

Cutting is only safe when no live process is in the middle of writing that
line. Optuna's default lock is a symlink that a killed process leaves behind
(Optuna breaks it after 30 s) and that names no owner, so a lock held by a dead
writer cannot be told from one held by a live one. This backend locks with
``flock(2)`` instead: the kernel drops the lock when its holder dies, so a tail
seen without a newline while this process holds the lock is torn for certain.
``flock`` is local-filesystem semantics: a journal on NFS is not safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock  # the lock interface; not re-exported

__all__ = ["FlockLock", "HealingJournalBackend", "torn_tail"]

_CHUNK = 1 << 16


class FlockLock(BaseJournalFileLock):
    """An exclusive ``flock`` on ``<journal>.flock``; the kernel releases it when the holder dies."""

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(journal.name + ".flock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write access
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class HealingJournalBackend(JournalFileBackend):
    """A journal file whose torn last record is set aside on open and before each append."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), lock_obj=FlockLock(path))
        self.path = path
        if torn_tail(path, parse=True) is not None and os.access(path, os.W_OK):
            with _held(self._lock):
                self._set_aside(parse=True)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with _held(self._lock):
            self._set_aside(parse=False)
            with open(self.path, "ab") as handle:
                start = handle.tell()
                try:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError:
                    with contextlib.suppress(OSError):  # a short write (ENOSPC) must not stay as a torn line
                        _truncate(handle, start)
                    raise

    def _set_aside(self, *, parse: bool) -> None:
        """Move a torn tail to a side file; the caller holds the lock, so no live writer is mid-line."""
        found = torn_tail(self.path, parse=parse)
        if found is None:
            return
        start, torn = found
        with open(self.path, "r+b") as handle:
            _truncate(handle, start)  # first: on a full disk this frees the room the side file needs
        side = self.path.with_name(f"{self.path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            side.write_bytes(torn)
        except OSError as err:
            _say(f"journal: dropped a torn last record ({len(torn)} bytes) of {self.path}: {err.strerror}")
            return
        _say(f"journal: set aside a torn last record ({len(torn)} bytes) of {self.path} in {side}")


def torn_tail(path: Path, *, parse: bool) -> tuple[int, bytes] | None:
    """Where the torn last record of ``path`` starts, and its bytes; None when the journal is whole.

    A record is torn when it has no newline, or (``parse``) when the last line is not JSON.
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return None
            handle.seek(size - 1)
            ends_whole = handle.read(1) == b"\n"
            if ends_whole and not parse:
                return None
            start = _line_start(handle, size - 1 if ends_whole else size)
            handle.seek(start)
            last = handle.read()
    except FileNotFoundError:
        return None
    if ends_whole and _is_json(last):
        return None
    return start, last


def _line_start(handle: Any, end: int) -> int:
    """The offset just after the last newline before ``end`` (0 if none)."""
    pos = end
    while pos > 0:
        step = min(_CHUNK, pos)
        handle.seek(pos - step)
        found = handle.read(step).rfind(b"\n")
        if found >= 0:
            return pos - step + found + 1
        pos -= step
    return 0


@contextlib.contextmanager
def _held(lock: BaseJournalFileLock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _truncate(handle: Any, size: int) -> None:
    handle.truncate(size)
    handle.flush()
    os.fsync(handle.fileno())


def _say(line: str) -> None:
    # stderr, as the tracking outage notice: a live display prints it above itself; a worker's goes to its log.
    print(line, file=sys.stderr, flush=True)
