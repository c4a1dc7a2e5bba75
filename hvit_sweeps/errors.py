"""The project's exception types.

Anything the user can fix (a bad flag, a bad study file, missing data, a foreign
checkpoint) is raised as :class:`HvitError`. The CLI prints its message as one
line and exits with code 2; nothing else in the package catches it.

A fault of the machine during a sweep (a full disk, a read-only folder, a
database that stays away) is a :class:`SweepFault`: also one line, but exit
code 1, and `run` adds the command that continues the study.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["HvitError", "SweepFault", "checkpoint_file", "first_line"]


class HvitError(Exception):
    """A problem in the user's input, stated with the fix."""

    exit_code = 2


class SweepFault(HvitError):
    """The machine failed the sweep (disk, database); finished trials are kept and `--resume` continues."""

    exit_code = 1


def first_line(err: BaseException, *, limit: int = 200) -> str:
    """The first line of an error's message, for a one-line message of our own; the type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def checkpoint_file(path: Path) -> Path:
    """``path`` if it is a file; a folder or a missing path is an HvitError that says what to pass.

    Free of torch, so the CLI answers a wrong path before loading it.
    """
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.pth"))
        hint = f": pass one of {', '.join(found[:3])}" if found else ": pass the .pth file inside it"
        raise HvitError(f"{path} is a directory, not a checkpoint{hint}")
    if not path.is_file():
        raise HvitError(f"checkpoint not found: {path}: pass the .pth file written by `hvit-sweep train`")
    return path
