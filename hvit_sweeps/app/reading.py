"""The commands that read: `show`, `report`, `studies` and `ui`. None of them imports torch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hvit_sweeps.app.links import run_links, trials_link
from hvit_sweeps.app.options import StudyRef
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ui_base

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["open_ui", "report", "show", "studies_table"]


def show(ref: StudyRef) -> list[RenderableType]:
    """A study's trials, summary, budget and confirmation as tables and lines, then its MLflow links."""
    from hvit_sweeps.budget import budget_line
    from hvit_sweeps.confirm import confirmation_table, stored_confirmation
    from hvit_sweeps.console import sweep_summary, trials_table
    from hvit_sweeps.sweep.record import StudyRecord

    loaded = ref.load()
    record = StudyRecord.of(loaded)
    shown: list[RenderableType] = [
        trials_table(record.trials, title=f"study {record.name}", metric_names=record.metric_names),
        sweep_summary(loaded),
    ]
    if (line := budget_line(loaded)) is not None:
        shown.append(line)
    if (confirmed := stored_confirmation(loaded)) is not None:
        shown.append(confirmation_table(confirmed))
    return [
        *shown,
        *trials_link(ref, record),
        *run_links(record.trials, experiment_id=record.experiment_id, base=ui_base(ref.tracking_uri)),
    ]


def report(ref: StudyRef, *, out: Path | None, top: int, interactive: bool | None) -> Path:
    """Write one self-contained HTML page for a study; its path."""
    from hvit_sweeps.report import build_report
    from hvit_sweeps.sweep.background import wait_for_background

    loaded = ref.load()
    wait_for_background(ref.root, loaded.study_name)  # the visuals and plots that `run` draws after its trials
    out = out or Path(f"report-{loaded.study_name}.html")
    return build_report(loaded, tracker=ref.tracker(), out=out, top=top, interactive=interactive)


def studies_table() -> RenderableType:
    """The study files in studies/ with their descriptions; an invalid one says why."""
    from rich.table import Table

    from hvit_sweeps.study import find_study_files, load_study, studies_dir

    table = Table(title=f"studies in {studies_dir()}", title_justify="left")
    for column in ("name", "objective", "sampler / pruner", "trials x epochs", "description"):
        table.add_column(column)
    for path in find_study_files():
        try:
            spec, _ = load_study(path)
        except HvitError as err:
            table.add_row(path.stem, "[red]invalid[/red]", "", "", str(err))
            continue
        objectives = ", ".join(f"{o.direction[:3]} {o.metric}" for o in spec.objectives)
        table.add_row(
            spec.name,
            objectives,
            f"{spec.sampler.type} / {spec.pruner.type}",
            f"{spec.trials} x {spec.max_epochs}",
            spec.description,
        )
    return table


def open_ui(root: Path, port: int, *, show_line: Callable[[str], None]) -> int:
    """Serve the MLflow UI on the embedded store under ``root`` until Ctrl-C; its exit code.

    Once it answers, ``show_line`` gets each study's links, then where the UI is.
    """
    import signal

    from hvit_sweeps.saying import saying

    # A shell starts a `&` job with SIGINT ignored, and Python keeps that: restore Ctrl-C / kill -INT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    waiting = contextlib.ExitStack()
    waiting.enter_context(saying(f"starting MLflow UI on http://127.0.0.1:{port} (about 15 s)"))
    from hvit_sweeps.tracking import Tracker
    from hvit_sweeps.ui import LOG_FILE, study_links
    from hvit_sweeps.ui import serve_ui as serve

    def ready(base: str) -> None:
        waiting.close()
        for name, trials, study_run in study_links(Tracker(None, root=root), base):
            show_line(f"{name}\n  trials, best first: {trials}\n  study run (plots, best so far): {study_run}")
        show_line(f"MLflow UI at {base} (log: {root / LOG_FILE}); Ctrl-C stops it")

    with waiting:  # closed on ready, or on an error before it
        return serve(root, port, on_ready=ready)
