"""The project's one exception type.

Anything the user can fix (a bad flag, a bad study file, missing data, a foreign
checkpoint) is raised as :class:`HvitError`. The CLI prints its message as one
line and exits with code 2; nothing else in the package catches it.
"""

from __future__ import annotations

__all__ = ["HvitError"]


class HvitError(Exception):
    """A problem in the user's input, stated with the fix."""
