"""Ctrl-C that stops cleanly at the next batch, and a second one that stops at once.

Python raises KeyboardInterrupt wherever the main thread happens to be: inside a
DataLoader handshake, an MLflow request or a half-written log line. Instead, the
first Ctrl-C (or SIGTERM, as ``docker stop`` sends) only sets a flag; the training
loop calls :func:`check` between batches and raises :class:`StopRequested` there,
so the trial is closed in order and everything finished is kept. A second Ctrl-C
raises KeyboardInterrupt at once, for a user who will not wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["StopRequested", "check", "graceful_interrupts", "requested"]

_requested = threading.Event()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(KeyboardInterrupt):
    """The user asked to stop; raised at a batch boundary, so nothing is half-done."""


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raise :class:`StopRequested` if a stop was asked for (call it between batches)."""
    if _requested.is_set():
        raise StopRequested("interrupted")


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
        notify("stopping at the end of this batch (Ctrl-C again to quit at once)")

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        _restore(previous)
        _requested.clear()


def _restore(previous: dict[signal.Signals, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
