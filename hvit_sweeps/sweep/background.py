"""Work after a sweep's trials that no one waits for: per-trial visuals and the study plots.

They took 31-76 s after the last trial of a smoke study on a 2-core CPU, with the trials
done. `run` hands them to a detached, low-priority process and returns. That process
holds a lock file under ``--root`` until it is done; `best --export` and `report`, which
read what it writes, wait on the lock (:func:`wait_for_background`) and say so.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hvit_sweeps.saying import saying

__all__ = ["start_background", "wait_for_background"]

_NICE = 10  # below the trials and the user's next command, above nothing


def lock_path(root: Path, study_name: str) -> Path:
    return root / "logs" / f"{study_name}.background.lock"


def log_path(root: Path, study_name: str) -> Path:
    return root / "logs" / f"{study_name}.background.log"


def start_background(
    *, spec_path: Path, study_name: str, storage_url: str | None, tracking_uri: str | None,
    root: Path, cli: dict[str, Any],
) -> Path:  # fmt: skip
    """Start the detached drawer; returns its log. The lock is taken here, before this returns.

    The lock is an open file description shared with the child: this process takes it and
    the child inherits it, so a command started the moment `run` ends already sees it held.
    """
    lock = lock_path(root, study_name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(handle, fcntl.LOCK_EX)
    job = {
        "spec_path": str(spec_path), "study_name": study_name, "storage_url": storage_url,
        "tracking_uri": tracking_uri, "root": str(root), "cli": cli,
    }  # fmt: skip
    log = log_path(root, study_name)
    with open(log, "w") as out:
        subprocess.Popen(
            [sys.executable, "-m", "hvit_sweeps.sweep.background", json.dumps(job)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=(handle,),
            start_new_session=True,  # a Ctrl-C in the terminal after `run` ended does not reach it
            preexec_fn=lambda: os.nice(_NICE),
        )  # fmt: skip
    os.close(handle)  # the child's copy keeps the lock
    return log


def wait_for_background(root: Path, study_name: str) -> None:
    """Block, saying so, while a drawer for this study still runs; return at once otherwise."""
    lock = lock_path(root, study_name)
    if not lock.is_file():
        return
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            what = f"waiting for the visuals and plots that `run` draws in the background (log: {log_path(root, study_name)})"
            with saying(what):
                fcntl.flock(handle, fcntl.LOCK_SH)
        fcntl.flock(handle, fcntl.LOCK_UN)


def _main(job: dict[str, Any]) -> None:
    """The drawer: the best trials' visuals, then the study plots on the parent run."""
    import optuna

    from hvit_sweeps.data import load_dataset
    from hvit_sweeps.keys import ATTR_EXPERIMENT, ATTR_PARENT
    from hvit_sweeps.study import load_study
    from hvit_sweeps.sweep.objective import log_best_visuals
    from hvit_sweeps.sweep.state import Connected, Sweep
    from hvit_sweeps.sweep.storage import open_storage

    spec, spec_path = load_study(job["spec_path"], cli=job["cli"])
    root = Path(job["root"])
    sweep = Sweep(
        spec=spec, spec_path=spec_path, study_name=job["study_name"], storage_url=job["storage_url"],
        tracking_uri=job["tracking_uri"], root=root, cli=job["cli"],
    )  # fmt: skip
    storage = open_storage(sweep.storage_url, root=root)
    study = optuna.load_study(study_name=sweep.study_name, storage=storage)
    connected = Connected(
        study=study, storage=storage, experiment_id=study.user_attrs[ATTR_EXPERIMENT],
        parent_run_id=study.user_attrs[ATTR_PARENT], target=0,
    )  # fmt: skip
    log_plots(sweep, connected)
    config = sweep.base_config
    drawn = log_best_visuals(sweep, connected, load_dataset(config.data, seed=config.seed))
    print(f"visuals drawn for trials {drawn}", flush=True)


def log_plots(sweep: Any, connected: Any) -> list[str]:
    """The study plots and parameter importances on the parent run (matplotlib: imported only here)."""
    from hvit_sweeps.plots import study_figures
    from hvit_sweeps.sweep.importance import log_importance

    log_importance(sweep.tracker, connected.study, connected.parent_run_id)
    return list(sweep.tracker.log_plots(connected.parent_run_id, study_figures(connected.study, sweep.spec)))


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
