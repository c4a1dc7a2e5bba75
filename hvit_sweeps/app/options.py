"""Where a study lives and what it runs with: the options ``run``, ``worker`` and the reading commands share.

The shared options are one table, :data:`SWEEP_FLAGS`. ``cli.py`` builds its options
from it, and the command lines that point at the same study again (the printed
``run --resume`` line, each worker process's argv) are generated from it, so they
cannot drift from the parsing.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvit_sweeps.errors import HvitError
from hvit_sweeps.flags import override_args, parse_sets, set_args
from hvit_sweeps.keys import JOURNAL_FILE

if TYPE_CHECKING:
    import optuna

    from hvit_sweeps.study import StudySpec
    from hvit_sweeps.sweep import Sweep
    from hvit_sweeps.tracking import Tracker

__all__ = [
    "DEFAULT_ROOT",
    "SWEEP_CONFIG_PATHS",
    "SWEEP_FLAGS",
    "StudyRef",
    "SweepFlag",
    "SweepOptions",
    "check_root",
    "resume_command",
    "worker_args",
]

DEFAULT_ROOT = Path("mlruns")
# The config flags a sweep takes for every trial; any other path goes through --set.
SWEEP_CONFIG_PATHS = ("data.dataset", "data.data_dir", "runtime.device", "seed")


@dataclass(frozen=True)
class SweepFlag:
    """One option that names a study, its stores or how a process runs it."""

    name: str  # the parameter, and the field of SweepOptions / StudyRef
    flag: str
    envvar: str | None = None
    # A resume line does not repeat a value that came from envvar: it comes from there again,
    # and a password stays out of logs.
    resume_skips_env: bool = False
    resumed: bool = True  # False: the process's own setting, which a `run --resume` line leaves out


SWEEP_FLAGS = {
    flag.name: flag
    for flag in (
        SweepFlag("study", "--study"),
        SweepFlag("study_name", "--study-name"),
        SweepFlag("root", "--root", envvar="HVIT_ROOT"),
        SweepFlag("storage", "--storage", envvar="HVIT_STORAGE", resume_skips_env=True),
        SweepFlag("tracking_uri", "--tracking-uri", envvar="MLFLOW_TRACKING_URI", resume_skips_env=True),
        SweepFlag("heartbeat", "--heartbeat", resumed=False),
        SweepFlag("timeout", "--timeout", resumed=False),
    )
}


def _sweep_args(values: Mapping[str, Any], *, resume: bool) -> list[str]:
    """The table's flags for the given values (None: left out), in the table's order."""
    args: list[str] = []
    for flag in SWEEP_FLAGS.values():
        value = values.get(flag.name)
        if value is None or (resume and not flag.resumed):
            continue
        if resume and flag.resume_skips_env and str(value) == os.environ.get(flag.envvar or ""):
            continue
        args += [flag.flag, str(value)]
    return args


def resume_command(sweep: Sweep, study: str) -> str:
    """The exact `run --resume` line: every flag that names this study, its stores and its overrides.

    ``study`` is the --study the user gave; the study name and root are repeated only
    where they differ from what that gives by default.
    """
    values = {
        "study": study,
        "study_name": sweep.study_name if sweep.study_name != sweep.spec.name else None,
        "root": sweep.root if sweep.root != DEFAULT_ROOT else None,
        "storage": sweep.storage_url,
        "tracking_uri": sweep.tracking_uri,
    }
    args = [*_sweep_args(values, resume=True), *override_args(sweep.cli, flag_paths=SWEEP_CONFIG_PATHS)]
    return shlex.join(["hvit-sweep", "run", *args, "--resume"])


def worker_args(sweep: Sweep, *, timeout: float | None) -> list[str]:
    """The flags that point a worker process at the same study, stores and overrides (an argv: no shell)."""
    values = {
        "study": sweep.spec_path,
        "study_name": sweep.study_name,
        "root": sweep.root,
        "storage": sweep.storage_url,
        "tracking_uri": sweep.tracking_uri,
        "heartbeat": sweep.heartbeat,
        "timeout": timeout,
    }
    return [*_sweep_args(values, resume=False), *set_args(sweep.cli)]


@dataclass(frozen=True)
class SweepOptions:
    """What names a study, its stores and its overrides: the options `run` and `worker` share."""

    study: str
    study_name: str | None
    storage: str | None
    tracking_uri: str | None
    sets: list[str] | None
    root: Path
    heartbeat: int
    timeout: float | None

    def spec(self, config_layer: dict[str, Any]) -> tuple[StudySpec, Path, dict[str, Any]]:
        """The study file, checked with the flags over it, and those flags; no torch or MLflow is imported."""
        from hvit_sweeps.study import load_study

        if self.storage is None or self.tracking_uri is None:
            check_root(self.root)
        cli = {**config_layer, **parse_sets(self.sets)}
        spec, path = load_study(self.study, cli=cli)
        return spec, path, cli

    def sweep(self, config_layer: dict[str, Any]) -> Sweep:
        """The study file loaded and checked with the flags over it, ready to connect."""
        return self.build(*self.spec(config_layer))

    def build(self, spec: StudySpec, path: Path, cli: dict[str, Any]) -> Sweep:
        """The sweep of a checked study file (:meth:`spec`); this imports MLflow."""
        from hvit_sweeps.sweep import Sweep

        return Sweep(
            spec=spec,
            spec_path=path.resolve(),
            study_name=self.study_name or spec.name,
            storage_url=self.storage,
            tracking_uri=self.tracking_uri,
            root=self.root,
            cli=cli,
            heartbeat=self.heartbeat,
        )


def check_root(root: Path) -> None:
    """The embedded stores live under --root: it must be, or become, a folder this process can write.

    Only checked here: the folder is created when the stores are first written, so a
    command that refuses its input leaves no empty folder behind.
    """
    if root.exists() and not root.is_dir():
        raise HvitError(f"--root {root} is a file: pass a folder for the embedded stores (default: mlruns)")
    existing = next(p for p in (root, *root.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise HvitError(f"--root {root}: {existing} is a file: pass a folder for the embedded stores")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is read-only" if existing == root else f"cannot be created ({existing} is read-only)"
        raise HvitError(f"--root {root} {what}: pass a writable folder, or --storage and --tracking-uri")


@dataclass(frozen=True)
class StudyRef:
    """Where an existing study lives: the options `show`, `best` and `report` share."""

    study: str
    study_name: str | None
    storage: str | None
    tracking_uri: str | None
    root: Path

    def load(self) -> optuna.Study:
        """The study from its storage; an unknown name is one line that says how to create it."""
        import optuna

        from hvit_sweeps.study import load_study
        from hvit_sweeps.sweep import open_storage

        name = self.study_name
        if name is None:
            looks_like_file = self.study.endswith(".toml") or "/" in self.study
            name = load_study(self.study)[0].name if looks_like_file else self.study
        where = self.storage or f"{self.root}/{JOURNAL_FILE}"
        missing = HvitError(
            f"no study named {name!r} in {where}: run `{shlex.join(['hvit-sweep', 'run', '--study', name])}` first, "
            "or pass --storage"
        )
        journal = _journal_path(self.storage, self.root)
        if journal is not None and not journal.is_file():
            raise missing  # reading must not create an empty journal
        opened = open_storage(self.storage, root=self.root)
        try:
            return optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            raise missing from None

    def tracker(self) -> Tracker:
        """The study's MLflow store, checked to answer."""
        from hvit_sweeps.tracking import Tracker

        tracker = Tracker(self.tracking_uri, root=self.root)
        tracker.check_reachable()
        return tracker


def _journal_path(storage: str | None, root: Path) -> Path | None:
    """The journal file a storage URL names (none given: the embedded one); None for a database or Redis."""
    if storage is None:
        return root / JOURNAL_FILE
    return Path(storage.removeprefix("journal:")) if storage.startswith("journal:") else None
