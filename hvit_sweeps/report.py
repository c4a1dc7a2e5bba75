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

import importlib.util
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial
from pydantic import ValidationError

from hvit_sweeps.confirm import confirmation_rows, stored_confirmation
from hvit_sweeps.cost import LATENCY_BATCH
from hvit_sweeps.errors import HvitError
from hvit_sweeps.html_page import Raw, escape, figure, img, link, page, png_of, table
from hvit_sweeps.keys import (
    ATTR_EPOCH,
    ATTR_RUN_ID,
    LOCAL_UI,
    PARAM_DATASET,
    PARAM_MAX_EPOCHS,
    PARAM_OBJECTIVES,
    PARAM_PRUNER,
    PARAM_SAMPLER,
    PARAM_SAMPLER_SEED,
    TAG_DATASET,
    TAG_DATASET_HASH,
    TAG_STUDY_FILE,
    best_metric,
    cost_metric,
    dataset_size_param,
    model_metric,
    ui_base,
)
from hvit_sweeps.mlflow_view import study_trials_url
from hvit_sweeps.study import StudySpec
from hvit_sweeps.sweep.record import StudyRecord
from hvit_sweeps.tracking import TrackedRun, Tracker, run_url
from hvit_sweeps.visuals import download_visuals

__all__ = ["LOCAL_UI", "SECTIONS", "build_report"]

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


@dataclass
class _Facts:
    """What the sections read: the study, its MLflow runs and where links point."""

    study: optuna.Study  # the plots read it
    record: StudyRecord
    tracker: Tracker
    experiment_id: str
    parent: TrackedRun
    runs: dict[str, TrackedRun]  # run id -> trial run
    best: list[FrozenTrial]  # best first: the top trials, or the Pareto set (StudyRecord.best)
    link_base: str

    def run_of(self, trial: FrozenTrial) -> TrackedRun | None:
        return self.runs.get(trial.user_attrs.get(ATTR_RUN_ID, ""))

    @property
    def metric_names(self) -> list[str]:
        return list(self.record.metric_names)


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
    out.write_text(page(f"Study {study.study_name}", sections, SECTIONS), encoding="utf-8")
    return out


# -- gathering -------------------------------------------------------------------------


def _collect(study: optuna.Study, tracker: Tracker, *, top: int, link_base: str | None) -> _Facts:
    record = StudyRecord.of(study)
    name = record.name
    if not record.complete:
        raise HvitError(f"study {name!r} has no complete trial yet: run `hvit-sweep run --study {name}` first")
    parent_id = record.parent_run_id
    if not parent_id:
        raise record.not_tracked()
    try:
        parent = tracker.run(parent_id)
    except MlflowException:
        raise record.parent_missing(tracker.uri) from None
    experiment_id = record.experiment_id or parent.experiment_id
    return _Facts(
        study=study,
        record=record,
        tracker=tracker,
        experiment_id=experiment_id,
        parent=parent,
        runs=_trial_runs(tracker, experiment_id, name),
        best=record.best(top),
        link_base=(link_base or ui_base(tracker.uri)).rstrip("/"),
    )


def _trial_runs(tracker: Tracker, experiment_id: str, study_name: str) -> dict[str, TrackedRun]:
    """Every trial run of the study, by run id."""
    return {run.run_id: run for run in tracker.trial_runs(experiment_id, study_name)}


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
    counts = facts.record.counts
    run = facts.run_of(facts.best[0])
    run_tags = run.tags if run else {}
    run_params = run.params if run else {}
    sizes = ", ".join(
        f"{k} {run_params[dataset_size_param(k)]}"
        for k in ("train", "val", "test")
        if dataset_size_param(k) in run_params
    )
    rows = [
        ("trials", ", ".join(f"{n} {state}" for state, n in counts.items() if state != "finished")),
        ("objectives", params.get(PARAM_OBJECTIVES) or _objectives_text(facts)),
        ("best", _best_text(facts)),
        ("sampler", f"{params.get(PARAM_SAMPLER, '?')} (seed {params.get(PARAM_SAMPLER_SEED, '?')})"),
        ("pruner", params.get(PARAM_PRUNER, "?")),
        ("epochs per trial", params.get(PARAM_MAX_EPOCHS, "?")),
        ("dataset", run_tags.get(TAG_DATASET) or params.get(PARAM_DATASET, "?")),
        ("dataset hash", run_tags.get(TAG_DATASET_HASH, "not recorded")),
        ("split sizes", sizes or "not recorded"),
        ("study file", tags.get(TAG_STUDY_FILE, "?")),
        ("tracking store", facts.tracker.uri),
    ]
    first = facts.metric_names[0]
    direction = facts.record.directions[0].name.lower()
    links = [
        link(
            study_trials_url(
                facts.tracker,
                facts.link_base,
                facts.experiment_id,
                facts.study.study_name,
                f"{first}:{direction}",
            ),  # fmt: skip
            "all trials in MLflow, best first",
        ),
        link(run_url(facts.link_base, facts.experiment_id, facts.parent.run_id), "the study's parent run"),
    ]
    note = ""
    if facts.link_base == LOCAL_UI:
        note = f"<p class='note'>Links open the MLflow UI: start it with <code>hvit-sweep ui --root {escape(str(facts.tracker.root))}</code>.</p>"
    return table(["", ""], rows, header=False) + f"<p>{' · '.join(links)}</p>" + note


def _objectives_text(facts: _Facts) -> str:
    return ", ".join(f"{m}:{d.name.lower()}" for m, d in zip(facts.metric_names, facts.record.directions, strict=False))


def _best_text(facts: _Facts) -> str:
    if facts.record.multi_objective:
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
        run_link = link(run_url(facts.link_base, facts.experiment_id, run.run_id), "run") if run else "no run"
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
                Raw(run_link),
            )
        )
        if run:
            config = sorted(run.params.items())
            details.append(
                f"<details><summary>trial {trial.number}: full config ({len(config)} settings)</summary>"
                f"{table(['setting', 'value'], config)}</details>"
            )
    what = "Pareto set, by the first objective" if facts.record.multi_objective else f"top {len(facts.best)}"
    return f"<p>{escape(what)}.</p>" + table(head, rows) + "".join(details)


def _plots_section(facts: _Facts, plotly: bool) -> str:
    from hvit_sweeps.plots import interactive_figures, study_figures  # matplotlib and plotly: only for a report

    spec = _spec_for_plots(facts.study)
    if plotly:
        figures = interactive_figures(facts.study, spec)
        parts = [
            figure(name, fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"responsive": True}))
            for i, (name, fig) in enumerate(figures.items())
        ]
    else:
        parts = [figure(name, img(png_of(fig), name)) for name, fig in study_figures(facts.study, spec).items()]
    kind = "interactive (plotly)" if plotly else "PNG (`report --interactive` draws them with plotly, when installed)"
    note = f"<p class='note'>{escape(kind)}; a plot that needs more trials is left out.</p>"
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
    for trial in facts.record.complete:
        run = facts.run_of(trial)
        metrics = run.metrics if run else {}
        if _ACCURACY in metrics:
            points.append((trial.number, metrics[_ACCURACY], *(metrics.get(key) for key, _ in _COST_AXES)))
    if not points:
        return f"<p>No complete trial run logged {_ACCURACY}.</p>"
    pareto = facts.record.multi_objective
    starred = {t.number for t in facts.best} if pareto else {facts.best[0].number}
    what = "the Pareto set" if pareto else "the best trial"
    return img(png_of(_cost_figure(points, starred)), "val_acc1 against params, FLOPs and measured cost") + (
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
    if confirmation is None and facts.record.multi_objective:
        return "<p>Seed confirmation ranks one objective; this study has several.</p>"
    if confirmation is None:
        name = facts.study.study_name
        return (
            "<p>No seed confirmation yet. <code>hvit-sweep best --study "
            f"{escape(name)} --confirm --top 3 --seeds 3</code> trains the top trials again with new seeds "
            "and says whether the best one really beats the runner-up.</p>"
        )
    head, rows = confirmation_rows(confirmation)
    return (
        f"<p><b>{escape(confirmation.statement)}</b></p>"
        + table(head, rows)
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
        parts = [figure(p.stem, img(p.read_bytes(), p.stem)) for p in pngs]
        summary = folder / "per_class_accuracy.json"
        worst = _worst_classes(json.loads(summary.read_text())) if summary.is_file() else ""
    return f"<p>Trial {trial.number}, from its run's <code>visuals/</code> artifacts.</p>" + "".join(parts) + worst


def _rank(stem: str) -> int:
    return _VISUAL_ORDER.index(stem) if stem in _VISUAL_ORDER else len(_VISUAL_ORDER)


def _worst_classes(summary: dict[str, Any], count: int = 10) -> str:
    scored = [c for c in summary.get("classes", []) if c.get("accuracy") is not None]
    worst = sorted(scored, key=lambda c: (c["accuracy"], c["index"]))[:count]
    rows = [(c["name"], f"{c['accuracy']:.1%}", f"{c['correct']}/{c['support']}") for c in worst]
    return f"<h3>Lowest-accuracy classes</h3>{table(['class', 'accuracy', 'correct'], rows)}"


# -- values ----------------------------------------------------------------------------


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
