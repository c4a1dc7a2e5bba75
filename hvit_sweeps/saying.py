"""Never silent: one line when a slow step starts, and another every second until it ends.

A user who sees nothing for a few seconds thinks the command hung. The steps around a
sweep's trials (importing MLflow and torch, loading data, starting workers, drawing
plots) print no progress of their own, so each runs inside :func:`saying`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["say", "saying"]

_EVERY_S = 1.0  # well under the 2 s a user waits before wondering, also on a loaded CPU


def say(line: str) -> None:
    """One line on stdout now, flushed: a pipe or a log sees it at once."""
    print(line, file=sys.stdout, flush=True)


@contextmanager
def saying(what: str, *, every: float = _EVERY_S) -> Iterator[None]:
    """Print ``what…`` now, then ``what… N s`` every ``every`` seconds while the block runs."""
    say(f"{what}…")
    done = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            say(f"{what}… {time.monotonic() - start:.0f} s")

    thread = threading.Thread(target=tick, name="saying", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
