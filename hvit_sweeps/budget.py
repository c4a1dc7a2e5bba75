"""Study budgets: ``run --budget 2h`` (wall time) or ``--budget 10gpu-h`` (device time), shared by all workers.

The budget is stored in the study (a user attribute, like the trial target), so
every worker of the study, on any machine, stops at the same one. Each worker
checks it before asking for a trial: once it is used, no new trial starts, the
running ones finish, and the study records why it stopped (:data:`ATTR_STOPPED`).

* **wall**: seconds since the budget was set (the ``run`` that set it);
* **device**: device-seconds of the trials started since then: a finished trial's
  measured ``cost/device_seconds`` (GPU wall time on CUDA, process CPU time on a
  CPU; see :mod:`hvit_sweeps.cost`), else its duration times one device; a running
  trial's time so far times one device.

A new ``run --budget`` replaces the stored budget and starts it anew; ``run`` and
``worker`` without it keep the stored one (so ``run --resume`` stops at once if it
is used up).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_COST, ATTR_SURPLUS

if TYPE_CHECKING:  # `run --budget` is parsed before Optuna loads; the study's figures need it
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "ATTR_BUDGET",
    "ATTR_STOPPED",
    "Budget",
    "budget_line",
    "budget_spent",
    "budget_used",
    "parse_budget",
    "settle_budget",
]

ATTR_BUDGET = "hvit.budget"  # {"kind", "seconds", "text", "set_at"}: the study's budget
ATTR_STOPPED = "hvit.stopped"  # {"reason", "at", "trials", "used_seconds", "set_at"}: why the study stopped

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?:(?P<device>gpu|device)-?)?(?P<unit>s|min|m|h|d)")


@dataclass(frozen=True)
class Budget:
    """A parsed ``--budget``: wall or device seconds, and the text the user gave."""

    kind: Literal["wall", "device"]
    seconds: float
    text: str

    def describe(self) -> str:
        return f"{self.text} ({'wall time' if self.kind == 'wall' else 'device time'})"


def parse_budget(text: str) -> Budget:
    """``2h``, ``90m``, ``45s``, ``1.5d`` (wall) or ``10gpu-h``, ``30device-m`` (device); else an HvitError."""
    found = _PATTERN.fullmatch(text.strip().lower())
    if not found or float(found["number"]) <= 0:
        raise HvitError(
            f"--budget {text!r}: give a positive amount and a unit: wall time as 45s, 90m, 2h or 1d, "
            "device time as 10gpu-h or 30gpu-m"
        )
    seconds = float(found["number"]) * _UNITS[found["unit"]]
    return Budget("device" if found["device"] else "wall", seconds, text.strip())


def settle_budget(study: optuna.Study, budget: Budget | None) -> None:
    """Store a new budget in the study, starting now; None keeps the stored one."""
    if budget is not None:
        record = {"kind": budget.kind, "seconds": budget.seconds, "text": budget.text, "set_at": time.time()}
        study.set_user_attr(ATTR_BUDGET, record)


def _stored(study: optuna.Study) -> dict[str, Any] | None:
    record = study.user_attrs.get(ATTR_BUDGET)
    return record if isinstance(record, dict) else None


def _under_budget(trials: list[FrozenTrial], set_at: float) -> list[FrozenTrial]:
    """The trials started since the budget was set (surplus ones never trained)."""
    from optuna.trial import TrialState

    return [
        t
        for t in trials
        if t.datetime_start is not None
        and t.datetime_start.timestamp() >= set_at
        and not t.user_attrs.get(ATTR_SURPLUS)
        and t.state != TrialState.WAITING
    ]


def _device_seconds(trial: FrozenTrial, now: float) -> float:
    cost = trial.user_attrs.get(ATTR_COST) or {}
    if "device_seconds" in cost:
        return float(cost["device_seconds"])
    assert trial.datetime_start is not None
    end = trial.datetime_complete.timestamp() if trial.datetime_complete else now
    return max(0.0, end - trial.datetime_start.timestamp())  # no measurement (failed, running): wall x 1 device


def budget_used(study: optuna.Study, *, now: float | None = None) -> tuple[float, int] | None:
    """Seconds of the stored budget used so far, and the trials started under it; None without a budget."""
    record = _stored(study)
    if record is None:
        return None
    now = time.time() if now is None else now
    trials = _under_budget(study.get_trials(deepcopy=False), record["set_at"])
    if record["kind"] == "wall":
        return now - record["set_at"], len(trials)
    return sum(_device_seconds(t, now) for t in trials), len(trials)


def budget_spent(study: optuna.Study) -> str | None:
    """Why no new trial may start (the budget is used), recorded in the study; None while there is budget left."""
    record = _stored(study)
    used = budget_used(study)
    if record is None or used is None or used[0] < record["seconds"]:
        return None
    seconds, trials = used
    reason = f"budget {record['text']} used ({_hours(seconds, record['kind'])}) after {trials} trial(s)"
    stopped = study.user_attrs.get(ATTR_STOPPED)
    if not isinstance(stopped, dict) or stopped.get("set_at") != record["set_at"]:
        study.set_user_attr(
            ATTR_STOPPED,
            {
                "reason": reason,
                "at": time.time(),
                "trials": trials,
                "used_seconds": seconds,
                "set_at": record["set_at"],
            },
        )
    return reason


def budget_line(study: optuna.Study) -> str | None:
    """`show`'s line: the budget, how much of it the study used, and why it stopped."""
    record = _stored(study)
    if record is None:
        return None
    stopped = study.user_attrs.get(ATTR_STOPPED)
    if not isinstance(stopped, dict) or stopped.get("set_at") != record["set_at"]:
        stopped = None  # no stop, or one of an earlier budget
    ended = stopped is not None
    # After the stop, wall time is counted to the last trial's end, not to now.
    now = _last_end(study, record["set_at"]) if ended and record["kind"] == "wall" else None
    used = budget_used(study, now=now)
    assert used is not None
    seconds, trials = used
    since = dt.datetime.fromtimestamp(record["set_at"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    line = (
        f"budget {record['text']} ({record['kind']}, set {since}): used {_hours(seconds, record['kind'])}, "
        f"{100 * seconds / record['seconds']:.0f}%, by {trials} trial(s)"
    )
    return line + (f"; stopped: {stopped['reason']}" if stopped is not None else "")


def _last_end(study: optuna.Study, set_at: float) -> float | None:
    ends = [
        t.datetime_complete.timestamp()
        for t in _under_budget(study.get_trials(deepcopy=False), set_at)
        if t.datetime_complete is not None
    ]
    return max(ends) if ends else None


def _hours(seconds: float, kind: str) -> str:
    unit = "" if kind == "wall" else " device"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f}{unit} h"
    return f"{seconds / 60:.1f}{unit} min" if seconds >= 120 else f"{seconds:.1f}{unit} s"
