"""``hvit-sweep report``: one self-contained HTML page per study.

The page needs no server and fetches nothing: images are inline ``data:`` URIs,
and with plotly installed its interactive plots carry plotly.js inline too. The
only URLs in it are links to the study's MLflow runs. It reads the Optuna study
and the study's MLflow experiment (the parent run's params and tags, one search
for the trial runs, and the best trial's ``visuals/`` artifacts), so it works on
the embedded store and on PostgreSQL plus an MLflow server alike.

Sections: summary, best trials, Optuna plots, accuracy against cost, and the
best trial's per-trial visuals (see :mod:`hvit_sweeps.visuals`).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.util
import io
import json
import math
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from hvit_sweeps.confirm import confirmation_rows, stored_confirmation
from hvit_sweeps.cost import LATENCY_BATCH
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import (
    ATTR_EPOCH,
    ATTR_EXPERIMENT,
    ATTR_PARENT,
    ATTR_RUN_ID,
    PARAM_OBJECTIVES,
    TAG_DATASET,
    TAG_DATASET_HASH,
    TAG_STUDY_FILE,
    best_metric,
    cost_metric,
    model_metric,
)
from hvit_sweeps.mlflow_view import study_trials_url
from hvit_sweeps.study import StudySpec
from hvit_sweeps.sweep import trial_counts
from hvit_sweeps.tracking import TrackedRun, Tracker, run_url
from hvit_sweeps.visuals import download_visuals

__all__ = ["build_report"]

LOCAL_UI = "http://127.0.0.1:5000"  # where `hvit-sweep ui` serves the embedded store
SECTIONS = {
    "summary": "Study summary",
    "best-trials": "Best trials",
    "optuna-plots": "Optuna plots",
    "accuracy-cost": "Accuracy against cost",
    "seed-confirmation": "Seed confirmation (best --confirm)",
    "best-trial-visuals": "Best trial's visuals",
}
_VISUAL_ORDER = ("training_curves", "confusion_matrix", "per_class_accuracy", "misclassified", "train_batch")
_ACCURACY = best_metric("val_acc1")  # every trial run logs it, whatever the study optimises
_PARAMS, _FLOPS = model_metric("params_m"), model_metric("flops_m")
_SCROLL_OVER = (1600, 1400)  # px (width, height): shown at full size in a scroll box, so small labels stay readable


@dataclass
class _Facts:
    """What the sections read: the study, its MLflow runs and where links point."""

    study: optuna.Study
    tracker: Tracker
    experiment_id: str
    parent: TrackedRun
    runs: dict[str, TrackedRun]  # run id -> trial run
    complete: list[FrozenTrial]
    best: list[FrozenTrial]  # best first: the top trials, or the Pareto set
    link_base: str

    def run_of(self, trial: FrozenTrial) -> TrackedRun | None:
        return self.runs.get(trial.user_attrs.get(ATTR_RUN_ID, ""))

    @property
    def metric_names(self) -> list[str]:
        return list(self.study.metric_names or [f"value {i}" for i in range(len(self.study.directions))])


def build_report(
    study: optuna.Study,
    *,
    tracker: Tracker,
    out: Path,
    top: int = 5,
    link_base: str | None = None,
    interactive: bool | None = None,
) -> Path:
    """Write the study's report to ``out`` (one HTML file) and return its path.

    Args:
        study: A study run by hvit-sweep (its user attrs name its MLflow runs).
        tracker: The tracking store the study logged to.
        out: The HTML file to write; its folder is created.
        top: How many best trials to list (single objective; a Pareto set is listed whole).
        link_base: MLflow UI address for run links [default: the tracking server, or
            ``hvit-sweep ui``'s local address for the embedded store].
        interactive: Plotly plots (True), PNG (False), or plotly when installed (None).

    Raises:
        HvitError: the study has no complete trial, or its runs are not in ``tracker``.
    """
    facts = _collect(study, tracker, top=top, link_base=link_base)
    sections = {
        "summary": _summary_section(facts),
        "best-trials": _best_section(facts),
        "optuna-plots": _plots_section(facts, _use_plotly(interactive)),
        "accuracy-cost": _cost_section(facts),
        "seed-confirmation": _confirmation_section(facts),
        "best-trial-visuals": _visuals_section(facts),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(f"Study {study.study_name}", sections), encoding="utf-8")
    return out


# -- gathering -------------------------------------------------------------------------


def _collect(study: optuna.Study, tracker: Tracker, *, top: int, link_base: str | None) -> _Facts:
    name = study.study_name
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise HvitError(f"study {name!r} has no complete trial yet: run `hvit-sweep run --study {name}` first")
    parent_id = study.user_attrs.get(ATTR_PARENT)
    if not parent_id:
        raise HvitError(f"study {name!r} has no MLflow parent run: it was not run by hvit-sweep")
    try:
        parent = tracker.run(parent_id)
    except MlflowException:
        raise HvitError(
            f"study {name!r}: its MLflow run {parent_id} is not in {tracker.uri}: "
            "pass the --tracking-uri (or --root) the study was run with"
        ) from None
    experiment_id = study.user_attrs.get(ATTR_EXPERIMENT) or parent.experiment_id
    if link_base is None:
        link_base = LOCAL_UI if tracker.local or not tracker.uri.startswith("http") else tracker.uri
    return _Facts(
        study=study,
        tracker=tracker,
        experiment_id=experiment_id,
        parent=parent,
        runs=_trial_runs(tracker, experiment_id, name),
        complete=complete,
        best=_best_trials(study, complete, top),
        link_base=link_base.rstrip("/"),
    )


def _trial_runs(tracker: Tracker, experiment_id: str, study_name: str) -> dict[str, TrackedRun]:
    """Every trial run of the study, by run id."""
    return {run.run_id: run for run in tracker.trial_runs(experiment_id, study_name)}


def _best_trials(study: optuna.Study, complete: list[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The top trials by the objective, or the Pareto set ordered by its first objective."""
    first = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    pool = study.best_trials if len(study.directions) > 1 else complete
    ranked = sorted(pool, key=lambda t: (-t.values[0] if first else t.values[0], t.number))
    return ranked if len(study.directions) > 1 else ranked[:top]


def _spec_for_plots(study: optuna.Study) -> StudySpec:
    """The objectives as a StudySpec, which is what :func:`~hvit_sweeps.plots.study_figures` reads."""
    names = study.metric_names or ["val_acc1"] * len(study.directions)
    objectives = [{"metric": m, "direction": d.name.lower()} for m, d in zip(names, study.directions, strict=False)]
    try:
        return StudySpec.model_validate({"name": "report", "objectives": objectives, "pruner": {"type": "none"}})
    except ValidationError:  # metric names hvit-sweep does not know: label the plots generically
        generic = [{"direction": o["direction"]} for o in objectives]
        return StudySpec.model_validate({"name": "report", "objectives": generic, "pruner": {"type": "none"}})


# -- sections --------------------------------------------------------------------------


def _summary_section(facts: _Facts) -> str:
    params, tags = facts.parent.params, facts.parent.tags
    counts = trial_counts(facts.study)
    run = facts.run_of(facts.best[0])
    run_tags = run.tags if run else {}
    run_params = run.params if run else {}
    sizes = ", ".join(
        f"{k} {run_params[f'dataset.{k}_size']}" for k in ("train", "val", "test") if f"dataset.{k}_size" in run_params
    )
    rows = [
        ("trials", ", ".join(f"{n} {state}" for state, n in counts.items() if state != "finished")),
        ("objectives", params.get(PARAM_OBJECTIVES) or _objectives_text(facts)),
        ("best", _best_text(facts)),
        ("sampler", f"{params.get('study.sampler', '?')} (seed {params.get('study.sampler_seed', '?')})"),
        ("pruner", params.get("study.pruner", "?")),
        ("epochs per trial", params.get("study.max_epochs", "?")),
        ("dataset", run_tags.get(TAG_DATASET) or params.get("study.dataset", "?")),
        ("dataset hash", run_tags.get(TAG_DATASET_HASH, "not recorded")),
        ("split sizes", sizes or "not recorded"),
        ("study file", tags.get(TAG_STUDY_FILE, "?")),
        ("tracking store", facts.tracker.uri),
    ]
    first = facts.metric_names[0]
    direction = facts.study.directions[0].name.lower()
    links = [
        _link(
            study_trials_url(
                facts.tracker,
                facts.link_base,
                facts.experiment_id,
                facts.study.study_name,
                f"{first}:{direction}",
            ),  # fmt: skip
            "all trials in MLflow, best first",
        ),
        _link(run_url(facts.link_base, facts.experiment_id, facts.parent.run_id), "the study's parent run"),
    ]
    note = ""
    if facts.link_base == LOCAL_UI:
        note = f"<p class='note'>Links open the MLflow UI: start it with <code>hvit-sweep ui --root {_e(str(facts.tracker.root))}</code>.</p>"
    return _table(["", ""], rows, header=False) + f"<p>{' · '.join(links)}</p>" + note


def _objectives_text(facts: _Facts) -> str:
    return ", ".join(f"{m}:{d.name.lower()}" for m, d in zip(facts.metric_names, facts.study.directions, strict=False))


def _best_text(facts: _Facts) -> str:
    if len(facts.study.directions) > 1:
        return f"Pareto set of {len(facts.best)} trial(s)"
    trial = facts.best[0]
    return f"{facts.metric_names[0]} = {_metric(facts.metric_names[0], trial.values[0])} (trial {trial.number})"


def _best_section(facts: _Facts) -> str:
    names = facts.metric_names
    head = ["rank", "trial", *names, "params_m", "flops_m", "epochs", "duration", "sampled params", "MLflow"]
    rows, details = [], []
    for rank, trial in enumerate(facts.best, start=1):
        run = facts.run_of(trial)
        metrics = run.metrics if run else {}
        link = _link(run_url(facts.link_base, facts.experiment_id, run.run_id), "run") if run else "no run"
        rows.append(
            (
                rank,
                trial.number,
                *(_metric(name, v) for name, v in zip(names, trial.values, strict=False)),
                _fmt(metrics.get(_PARAMS)),
                _fmt(metrics.get(_FLOPS)),
                len(trial.intermediate_values) or trial.user_attrs.get(ATTR_EPOCH, ""),
                _duration(trial),
                _params_text(trial.params),
                _Raw(link),
            )
        )
        if run:
            config = sorted(run.params.items())
            details.append(
                f"<details><summary>trial {trial.number}: full config ({len(config)} settings)</summary>"
                f"{_table(['setting', 'value'], config)}</details>"
            )
    what = "Pareto set, by the first objective" if len(facts.study.directions) > 1 else f"top {len(facts.best)}"
    return f"<p>{_e(what)}.</p>" + _table(head, rows) + "".join(details)


def _plots_section(facts: _Facts, plotly: bool) -> str:
    from hvit_sweeps.plots import interactive_figures, study_figures  # matplotlib and plotly: only for a report

    spec = _spec_for_plots(facts.study)
    if plotly:
        figures = interactive_figures(facts.study, spec)
        parts = [
            _figure(name, fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"responsive": True}))
            for i, (name, fig) in enumerate(figures.items())
        ]
    else:
        parts = [_figure(name, _img(_png_of(fig), name)) for name, fig in study_figures(facts.study, spec).items()]
    kind = "interactive (plotly)" if plotly else "PNG (`report --interactive` draws them with plotly, when installed)"
    note = f"<p class='note'>{_e(kind)}; a plot that needs more trials is left out.</p>"
    return note + f"<div class='grid'>{''.join(parts)}</div>"


# The x axes of the accuracy-against-cost figure: size and compute, then the measured cost of each trial.
_COST_AXES = (
    (_PARAMS, "params_m (millions of parameters)"),
    (_FLOPS, "flops_m (MFLOPs per image)"),
    (cost_metric("device_seconds"), "device-seconds per trial (measured)"),
    (cost_metric("latency_ms"), f"latency, ms per batch of {LATENCY_BATCH} (measured)"),
)


def _cost_section(facts: _Facts) -> str:
    points = []
    for trial in facts.complete:
        run = facts.run_of(trial)
        metrics = run.metrics if run else {}
        if _ACCURACY in metrics:
            points.append((trial.number, metrics[_ACCURACY], *(metrics.get(key) for key, _ in _COST_AXES)))
    if not points:
        return f"<p>No complete trial run logged {_ACCURACY}.</p>"
    pareto = len(facts.study.directions) > 1
    starred = {t.number for t in facts.best} if pareto else {facts.best[0].number}
    what = "the Pareto set" if pareto else "the best trial"
    return _img(_png_of(_cost_figure(points, starred)), "val_acc1 against params, FLOPs and measured cost") + (
        f"<p class='note'>{len(points)} complete trial(s), coloured by trial number and labelled with it; "
        f"red stars: {what}. Device-seconds: GPU wall time on CUDA, process CPU time on a CPU.</p>"
    )


def _cost_figure(points: list[tuple[Any, ...]], best: set[int]) -> Any:
    import matplotlib.pyplot as plt

    with plt.style.context("default"):  # not the ggplot style Optuna's plots leave behind
        fig, grid = plt.subplots(2, 2, figsize=(12, 8.5))
        for column, (ax, (_, label)) in enumerate(zip(grid.flat, _COST_AXES, strict=True), start=2):
            xs = [(p[column], p[1], p[0]) for p in points if p[column] is not None]
            ax.scatter([x for x, _, _ in xs], [y for _, y, _ in xs], c=[n for _, _, n in xs], cmap="viridis", s=30)
            starred = [(x, y) for x, y, n in xs if n in best]
            ax.scatter([x for x, _ in starred], [y for _, y in starred], marker="*", s=160, color="#d32f2f", zorder=3)
            if 0 < len(xs) <= 40:
                for (x, y), numbers in _label_groups(xs).items():
                    ax.annotate(numbers, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(label)
            ax.set_ylabel("best val_acc1 (fraction)")
            ax.grid(color="#e5e5e5", linewidth=0.5)
            if not xs:
                ax.text(0.5, 0.5, "not measured for these trials", ha="center", transform=ax.transAxes)
        fig.suptitle("accuracy against model size, compute and measured cost, complete trials")
        fig.tight_layout()
    return fig


def _label_groups(points: list[tuple[float, float, int]], *, cells: int = 60) -> dict[tuple[float, float], str]:
    """One label per spot: trials whose points fall within 1/``cells`` of the axes' span share "2, 3".

    Tied trials (same size, same accuracy) sit on one point; their own labels printed over each other.
    """
    xs, ys = [x for x, _, _ in points], [y for _, y, _ in points]
    x_step = (max(xs) - min(xs)) / cells or 1.0
    y_step = (max(ys) - min(ys)) / cells or 1.0
    groups: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
    for x, y, n in points:
        groups.setdefault((round(x / x_step), round(y / y_step)), []).append((x, y, n))
    return {
        (members[0][0], members[0][1]): ", ".join(str(n) for _, _, n in sorted(members, key=lambda m: m[2]))
        for members in groups.values()
    }


def _confirmation_section(facts: _Facts) -> str:
    """`best --confirm`'s ranking: each confirmed trial's replicate values, mean and 95% interval."""
    confirmation = stored_confirmation(facts.study)
    if confirmation is None and len(facts.study.directions) > 1:
        return "<p>Seed confirmation ranks one objective; this study has several.</p>"
    if confirmation is None:
        name = facts.study.study_name
        return (
            "<p>No seed confirmation yet. <code>hvit-sweep best --study "
            f"{_e(name)} --confirm --top 3 --seeds 3</code> trains the top trials again with new seeds "
            "and says whether the best one really beats the runner-up.</p>"
        )
    head, rows = confirmation_rows(confirmation)
    return (
        f"<p><b>{_e(confirmation.statement)}</b></p>"
        + _table(head, rows)
        + (
            "<p class='note'>Each trial's config trained again with new training seeds on the study's own "
            "train/val split and epoch budget (MLflow runs with role replicate); 95% t-intervals; test never "
            "evaluated. `best --retrain` and `best --export` take the winner.</p>"
        )
    )


def _visuals_section(facts: _Facts) -> str:
    trial = facts.best[0]
    run = facts.run_of(trial)
    if run is None:
        return f"<p>Trial {trial.number} has no MLflow run.</p>"
    with tempfile.TemporaryDirectory(prefix="hvit-report-") as tmp:
        folder = download_visuals(facts.tracker, run.run_id, Path(tmp))
        if folder is None:
            return (
                f"<p>Trial {trial.number}'s run has no <code>visuals/</code> artifacts "
                "(they are written for trials whose checkpoint is kept).</p>"
            )
        pngs = sorted(folder.glob("*.png"), key=lambda p: (_rank(p.stem), p.stem))
        parts = [_figure(p.stem, _img(p.read_bytes(), p.stem)) for p in pngs]
        summary = folder / "per_class_accuracy.json"
        worst = _worst_classes(json.loads(summary.read_text())) if summary.is_file() else ""
    return f"<p>Trial {trial.number}, from its run's <code>visuals/</code> artifacts.</p>" + "".join(parts) + worst


def _rank(stem: str) -> int:
    return _VISUAL_ORDER.index(stem) if stem in _VISUAL_ORDER else len(_VISUAL_ORDER)


def _worst_classes(summary: dict[str, Any], count: int = 10) -> str:
    scored = [c for c in summary.get("classes", []) if c.get("accuracy") is not None]
    worst = sorted(scored, key=lambda c: (c["accuracy"], c["index"]))[:count]
    rows = [(c["name"], f"{c['accuracy']:.1%}", f"{c['correct']}/{c['support']}") for c in worst]
    return f"<h3>Lowest-accuracy classes</h3>{_table(['class', 'accuracy', 'correct'], rows)}"


# -- HTML ------------------------------------------------------------------------------

# The plot grid is auto-fill, not auto-fit: plotly sizes a figure to its cell as the page is parsed, and with
# auto-fit the first cell spans the whole row until the second figure arrives.
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1320px;padding:0 24px 48px;color:#1d1d1f}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
nav a{margin-right:16px}table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
img{max-width:100%;height:auto;display:block;margin:8px 0}.scroll{overflow:auto;max-height:1000px;border:1px solid #ddd}
.scroll img{max-width:none}figure{margin:16px 0}figcaption{font-weight:600;font-size:14px;color:#444}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:8px 24px}
.note{color:#666;font-size:13px}details{margin:6px 0}code{background:#f3f3f3;padding:1px 4px}
"""


class _Raw(str):
    """HTML that a table cell must not escape."""


def _page(title: str, sections: dict[str, str]) -> str:
    nav = "".join(f"<a href='#{key}'>{_e(SECTIONS[key])}</a>" for key in sections)
    body = "".join(
        f"<section id='{key}'><h2>{_e(SECTIONS[key])}</h2>{content}</section>" for key, content in sections.items()
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class='note'>hvit-sweep report, {stamp}</p><nav>{nav}</nav>{body}</body></html>"
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], *, header: bool = True) -> str:
    top = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" if header else ""
    cells = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{top}{cells}</table>"


def _cell(value: Any) -> str:
    return value if isinstance(value, _Raw) else _e(str(value))


def _figure(name: str, content: str) -> str:
    return f"<figure id='fig-{_e(name)}'><figcaption>{_e(name.replace('_', ' '))}</figcaption>{content}</figure>"


def _img(png: bytes, alt: str) -> str:
    tag = f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
    width, height = _png_size(png)
    return f"<div class='scroll'>{tag}</div>" if width > _SCROLL_OVER[0] or height > _SCROLL_OVER[1] else tag


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the PNG header; (0, 0) for anything else."""
    return struct.unpack(">II", png[16:24]) if png[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0)


def _png_of(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _link(url: str, text: str) -> str:
    return f"<a href='{_e(url)}'>{_e(text)}</a>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _metric(name: str, value: Any) -> str:
    """An objective's value as the CLI writes it: accuracies as percentages (11.00%, not 0.11)."""
    from hvit_sweeps.metrics import format_metric

    return format_metric(name, value)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _duration(trial: FrozenTrial) -> str:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return ""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"  # tiny trials take under a second


def _use_plotly(interactive: bool | None) -> bool:
    if interactive is False:
        return False
    installed = importlib.util.find_spec("plotly") is not None
    if interactive and not installed:
        raise HvitError("--interactive needs plotly: pip install plotly, or use --png")
    return installed
