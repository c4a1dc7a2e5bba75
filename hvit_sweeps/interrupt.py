"""Ctrl-C that stops cleanly at the next batch, and a second one that stops at once.

Python raises KeyboardInterrupt wherever the main thread happens to be: inside a
DataLoader handshake, an MLflow request or a half-written log line. Instead, the
first Ctrl-C (or SIGTERM, as ``docker stop`` sends) only sets a flag; the training
loop calls :func:`check` between batches and raises :class:`StopRequested` there,
so the trial is closed in order and everything finished is kept. A second Ctrl-C
raises KeyboardInterrupt at once, for a user who will not wait.

A process that waits on a server (a database restarting, an MLflow server that
does not answer) is not between batches, so it checks :func:`requested` in its
retry loop, or marks the wait with :func:`waiting_on_server`, during which the
first signal stops at once: a scheduler's SIGTERM is followed by SIGKILL soon.

A worker started by `run` (``HVIT_PARENT_PID`` in its environment) also stops
when `run` is gone: the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``), and
:func:`requested` notices a new parent, should that signal not come.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = [
    "PARENT_ENV",
    "StopRequested",
    "check",
    "die_with_parent",
    "graceful_interrupts",
    "orphaned",
    "requested",
    "set_waiting_on_server",
    "waiting_on_server",
]

PARENT_ENV = "HVIT_PARENT_PID"  # set by `run` for the workers it starts
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_requested = threading.Event()
_waiting = threading.Event()  # the main thread is in a retry loop on a server
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """The user asked to stop; raised at a batch boundary, so nothing is half-done."""


def requested() -> bool:
    """Whether a stop was asked for: a signal, or the `run` that started this worker is gone."""
    return _requested.is_set() or orphaned()


def orphaned() -> bool:
    """Whether this process was started by a `run` that has ended (its parent changed)."""
    parent = os.environ.get(PARENT_ENV, "")
    return parent.isdigit() and os.getppid() != int(parent)


def check() -> None:
    """Raise :class:`StopRequested` if a stop was asked for (call it between batches)."""
    if requested():
        raise StopRequested("interrupted" if _requested.is_set() else "the `run` that started this worker ended")


@contextlib.contextmanager
def waiting_on_server() -> Iterator[None]:
    """Within the block (a wait for a server), a stop request ends the wait at once.

    Raises StopRequested on entry when a stop was already asked for: the cleanup
    after a stop must not start another long wait on the same absent server.
    """
    set_waiting_on_server(True)
    try:
        yield
    finally:
        set_waiting_on_server(False)


def set_waiting_on_server(waiting: bool) -> None:
    """Mark the start or end of a wait on a server, for waits that are not one block (a retry log filter).

    Starting one raises StopRequested if a stop was already asked for.
    """
    if waiting:
        check()
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only; other threads poll requested()
    if waiting:
        _waiting.set()
    else:
        _waiting.clear()


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies, if `run` started this process (Linux only)."""
    if not os.environ.get(PARENT_ENV, "").isdigit() or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@contextlib.contextmanager
def graceful_interrupts(notify: Callable[[str], None]) -> Iterator[None]:
    """Within the block, the first Ctrl-C/SIGTERM asks for a stop; a second one interrupts at once.

    Args:
        notify: Told once, at the first signal, what will happen (printed for the user).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; elsewhere keep Python's default
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        if _requested.is_set():
            _restore(previous)
            raise KeyboardInterrupt
        _requested.set()
        if _waiting.is_set():  # blocked on a server: no batch end is coming
            raise StopRequested("interrupted while waiting on a server")
        notify("stopping at the end of this batch (Ctrl-C again to quit at once)")

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)
    die_with_parent()
    try:
        yield
    finally:
        _restore(previous)
        _requested.clear()


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
