"""Study plots as matplotlib figures, through Optuna's own visualisation module.

Each plot needs enough trials of the right kind (importances need two complete
trials with varying parameters, intermediate values need reports); a plot that
cannot be drawn yet is skipped with its reason rather than failing the study.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window, even on a desktop

import matplotlib.pyplot as plt
import numpy as np
import optuna
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from matplotlib.ticker import MaxNLocator
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from optuna.visualization import matplotlib as vis

from hvit_sweeps.keys import HP_NOT_APPLICABLE, PLOT_HISTORY, PLOT_INTERMEDIATE
from hvit_sweeps.study import StudySpec

__all__ = ["axis_name", "interactive_figures", "study_figures"]

PLOT_PARALLEL = "parallel_coordinate"
# Viridis without its palest fifth: dark at both ends of the scale, so every line shows on white.
_MPL_SCALE = ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.8, 256)), name="viridis_dark")


def study_figures(study: optuna.Study, spec: StudySpec) -> dict[str, Any]:
    """Name -> matplotlib figure for every plot this study's trials allow (PNG artifacts, the report without plotly)."""
    decorate: dict[str, Callable[[Any], Any]] = {
        PLOT_HISTORY: _integer_x,
        PLOT_INTERMEDIATE: lambda axes: _relabel(axes, xlabel="Epoch", ylabel=axis_name(spec.objectives[0].metric)),
        PLOT_PARALLEL: _readable_parallel,
    }
    figures = {}
    for name, draw in _plan(study, spec, vis).items():
        figure = _draw(lambda: decorate.get(name, _same)(draw()))  # noqa: B023 - called at once, in this iteration
        if figure is not None:
            figures[name] = figure
    return figures


def interactive_figures(study: optuna.Study, spec: StudySpec, height: int = 460) -> dict[str, Any]:
    """Name -> plotly figure for the same plots; needs plotly installed."""
    from optuna import visualization as plotly_vis

    figures = {}
    for name, draw in _plan(study, spec, plotly_vis).items():
        with _plotly_scale() if name == PLOT_PARALLEL else contextlib.nullcontext():
            figure = _try_draw(draw)
        if figure is None:
            continue
        # A fixed height: plotly's default of "100%" of a grid cell with no height is zero.
        figure.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50})
        if name == PLOT_INTERMEDIATE:
            figure.update_layout(xaxis_title="Epoch", yaxis_title=axis_name(spec.objectives[0].metric))
        if name in (PLOT_HISTORY, PLOT_INTERMEDIATE):
            figure.update_xaxes(tickformat="d", dtick=1 if _few_steps(study) else None)
        if name == PLOT_INTERMEDIATE:  # one line per trial: say which is which
            figure.update_layout(showlegend=True, legend_title_text="trial")
        figures[name] = figure
    return figures


def _plan(study: optuna.Study, spec: StudySpec, backend: Any) -> dict[str, Callable[[], Any]]:
    """Name -> draw call through Optuna's matplotlib or plotly module, for the plots these trials allow."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    first = spec.objectives[0]
    target: Callable[[FrozenTrial], float] | None = None
    if spec.multi_objective:

        def target(trial: FrozenTrial) -> float:
            return trial.values[0]

    filled = _every_param(study)
    plots: dict[str, Callable[[], Any]] = {
        PLOT_HISTORY: lambda: backend.plot_optimization_history(
            study, target=target, target_name=axis_name(first.metric)
        ),
        PLOT_PARALLEL: lambda: backend.plot_parallel_coordinate(
            filled, target=target, target_name=axis_name(first.metric)
        ),
    }
    if len(complete) >= 2:
        plots["param_importances"] = lambda: backend.plot_param_importances(
            study, target=target, target_name=axis_name(first.metric)
        )
    if spec.multi_objective:
        names = [o.metric for o in spec.objectives]
        plots["pareto_front"] = lambda: backend.plot_pareto_front(study, target_names=names)
    else:
        plots[PLOT_INTERMEDIATE] = lambda: backend.plot_intermediate_values(study)
    return plots


def axis_name(metric: str) -> str:
    """A metric's axis title; accuracies say their unit, since the CLI prints them as percentages."""
    return f"{metric} (fraction: 0.11 = 11%)" if "acc" in metric else metric


def _every_param(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the finished trials in which every trial has every parameter.

    Optuna's parallel coordinates put a parameter a trial did not sample (``stages.depth_1``
    of a 1-stage trial) on a "None" tick among the numbers; here it is HP_NOT_APPLICABLE (0),
    as in MLflow, on a numeric axis widened to hold it. A log-scaled parameter cannot hold 0
    and keeps Optuna's behaviour.
    """
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    names = {name for t in trials for name in t.params}
    if all(set(t.params) == names for t in trials):
        return study
    widest: dict[str, BaseDistribution] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            widest.setdefault(name, _with_zero(dist))
    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" on stderr
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(quiet)
    for trial in trials:
        absent = [n for n in names - set(trial.params) if _holds_zero(widest[n])]
        distributions = {**{n: widest[n] for n in absent}, **{n: _with_zero(d) for n, d in trial.distributions.items()}}
        params = {**dict.fromkeys(absent, HP_NOT_APPLICABLE), **trial.params}
        copy.add_trial(
            create_trial(
                state=trial.state, values=trial.values, params=params, distributions=distributions,
                intermediate_values=trial.intermediate_values,
            )
        )  # fmt: skip
    return copy


def _with_zero(dist: BaseDistribution) -> BaseDistribution:
    if isinstance(dist, IntDistribution) and not dist.log and dist.step == 1 and dist.low > 0:
        return IntDistribution(0, dist.high)
    if isinstance(dist, FloatDistribution) and not dist.log and dist.step is None and dist.low > 0:
        return FloatDistribution(0.0, dist.high)
    return dist


def _holds_zero(dist: BaseDistribution) -> bool:
    return isinstance(dist, (IntDistribution, FloatDistribution)) and dist._contains(HP_NOT_APPLICABLE)


@contextlib.contextmanager
def _plotly_scale() -> Iterator[None]:
    """Optuna's plotly parallel coordinates colour each line from its module's COLOR_SCALE ("Blues",
    white at the low end); it has no argument for it, so the scale is swapped for the one draw."""
    import plotly.colors
    from optuna.visualization import _parallel_coordinate as module

    saved = module.COLOR_SCALE
    scale = plotly.colors.sequential.Viridis[:8]  # without the palest greens and yellow
    module.COLOR_SCALE = [f"rgb{plotly.colors.hex_to_rgb(c)}" for c in scale]
    try:
        yield
    finally:
        module.COLOR_SCALE = saved


def _readable_parallel(axes: Any) -> Any:
    """Optuna's parallel coordinates, readable: lines that show on white, and axes far enough apart.

    Its "Blues" fades to white at the low end, so low-value lines vanished. Its figure keeps one
    width whatever the number of axes, so the tick labels of ten axes ran into each other.
    """
    for collection in axes.collections:
        if isinstance(collection, LineCollection):
            reverse = collection.get_cmap().name.endswith("_r")
            collection.set_cmap(_MPL_SCALE.reversed() if reverse else _MPL_SCALE)
            collection.set_linewidth(1.4)
    figure = axes.figure
    columns = len(figure.axes)  # one per parameter and the objective, plus the colour bar
    figure.set_size_inches(max(9.0, 1.25 * columns), 5.5)  # _draw keeps a width set here
    for each in figure.axes:
        each.tick_params(which="both", labelsize=7)
    return axes


def _few_steps(study: optuna.Study) -> bool:
    """Whole-number ticks one apart read well up to about a dozen trials or epochs."""
    steps = max((len(t.intermediate_values) for t in study.trials), default=0)
    return max(len(study.trials), steps) <= 12


def _same(axes: Any) -> Any:
    return axes


def _relabel(axes: Any, *, xlabel: str, ylabel: str) -> Any:
    """Optuna says "Step" and "Intermediate Value"; a trial's step is an epoch here."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return _integer_x(axes)


def _integer_x(axes: Any) -> Any:
    """Trial numbers and epochs are whole: no 0.5 ticks on a short study."""
    low, high = axes.get_xlim()
    if high - low < 2:  # one trial: matplotlib would span +-0.05 around it, with no whole tick but one
        middle = round((low + high) / 2)
        axes.set_xlim(middle - 0.5, middle + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    return axes


def _try_draw(draw: Callable[[], Any]) -> Any:
    """What ``draw`` returns, or None where the trials are too few or too uniform for this plot yet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks these plots experimental; importances warn on few trials
        try:
            return draw()
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            return None


def _draw(draw: Callable[[], Any]) -> Any:
    plt.close("all")
    axes = _try_draw(draw)
    figure = plt.gcf()
    if not figure.axes or axes is None:
        return None
    figure.set_size_inches(max(9.0, figure.get_figwidth()), 5.5)
    figure.tight_layout()
    return figure
