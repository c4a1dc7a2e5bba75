"""Study plots as matplotlib figures, through Optuna's own visualisation module.

Each plot needs enough trials of the right kind (importances need two complete
trials with varying parameters, intermediate values need reports); a plot that
cannot be drawn yet is skipped with its reason rather than failing the study.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window, even on a desktop

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from optuna.visualization import matplotlib as vis  # noqa: E402

from hvit_sweeps.keys import PLOT_HISTORY  # noqa: E402
from hvit_sweeps.study import StudySpec  # noqa: E402

__all__ = ["study_figures"]


def study_figures(study: optuna.Study, spec: StudySpec) -> dict[str, Any]:
    """Name -> figure for every plot this study's trials allow."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    first = spec.objectives[0]
    target: Callable[[FrozenTrial], float] | None = None
    if spec.multi_objective:

        def target(trial: FrozenTrial) -> float:
            return trial.values[0]

    plots: dict[str, Callable[[], Any]] = {
        PLOT_HISTORY: lambda: _integer_x(vis.plot_optimization_history(study, target=target, target_name=first.metric)),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, target=target, target_name=first.metric),
    }
    if len(complete) >= 2:
        plots["param_importances"] = lambda: vis.plot_param_importances(study, target=target, target_name=first.metric)
    if spec.multi_objective:
        names = [o.metric for o in spec.objectives]
        plots["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=names)
    else:
        plots["intermediate_values"] = lambda: _relabel(
            vis.plot_intermediate_values(study), xlabel="Epoch", ylabel=first.metric
        )
    figures = {}
    for name, draw in plots.items():
        figure = _draw(draw)
        if figure is not None:
            figures[name] = figure
    return figures


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


def _draw(draw: Callable[[], Any]) -> Any:
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks these plots experimental
        try:
            axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            return None  # too few or too uniform trials for this plot yet
    figure = plt.gcf()
    if not figure.axes or axes is None:
        return None
    figure.set_size_inches(9, 5.5)
    figure.tight_layout()
    return figure
