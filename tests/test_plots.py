"""Study plots: which figures a study's trials allow, drawn from a real in-memory study."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pytest

from hvit_sweeps.keys import PLOT_HISTORY
from hvit_sweeps.plots import study_figures
from hvit_sweeps.study import StudySpec, load_study

SPACE = """
[fixed]
"data.dataset" = "synthetic"
[space."optim.lr"]
type = "float"
low = 1e-4
high = 1e-1
log = true
[space."optim.weight_decay"]
type = "float"
low = 0.0
high = 0.1
"""
SINGLE = 'name = "one"\nmax_epochs = 4\n[objective]\nmetric = "val_acc1"\n' + SPACE
PARETO = (
    'name = "two"\nmax_epochs = 4\n[pruner]\ntype = "none"\n'
    '[[objectives]]\nmetric = "val_acc1"\n[[objectives]]\nmetric = "params_m"\ndirection = "minimize"\n' + SPACE
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def spec_of(tmp_path: Path, body: str) -> StudySpec:
    path = tmp_path / "study.toml"
    path.write_text(body)
    return load_study(path)[0]


def run(spec: StudySpec, trials: int) -> optuna.Study:
    """``trials`` trials through ask and tell, each reporting every epoch like a sweep does."""
    study = optuna.create_study(
        directions=[o.direction for o in spec.objectives], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for number in range(trials):
        trial = study.ask()
        params = spec.suggest(trial)
        acc = 0.1 * (number + 1) + params["optim.weight_decay"]
        if spec.multi_objective:
            study.tell(trial, [acc, 1.0 + number])
            continue
        for epoch in range(1, spec.max_epochs + 1):
            trial.report(acc * epoch / spec.max_epochs, epoch)
        study.tell(trial, acc)
    return study


# No complete trial yet: nothing to draw, and no error.
def test_no_complete_trial_gives_no_figures(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SINGLE)
    study = optuna.create_study(direction="maximize")
    study.ask()
    assert study_figures(study, spec) == {}


# One complete trial: history, parallel coordinates and epochs, but no importances (they need two).
def test_one_trial_has_no_importances(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SINGLE)
    assert "param_importances" not in study_figures(run(spec, 1), spec)


# A single-objective study gets its history, parallel coordinates, importances and per-epoch values.
def test_single_objective_figures(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SINGLE)
    figures = study_figures(run(spec, 4), spec)
    assert set(figures) == {PLOT_HISTORY, "parallel_coordinate", "param_importances", "intermediate_values"}


# A two-objective study draws its Pareto front instead of per-epoch values.
def test_pareto_study_draws_the_front(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, PARETO)
    figures = study_figures(run(spec, 4), spec)
    assert set(figures) == {PLOT_HISTORY, "parallel_coordinate", "param_importances", "pareto_front"}


# Trial numbers and epochs are whole: a short study's history and epoch axes have integer ticks only.
def test_history_and_epoch_axes_have_integer_ticks(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SINGLE)
    figures = study_figures(run(spec, 3), spec)
    for name in (PLOT_HISTORY, "intermediate_values"):
        ticks = figures[name].axes[0].get_xticks()
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), (name, ticks)


# Optuna's "Step" and "Intermediate Value" read as the epoch and the objective's metric.
def test_epoch_axes_are_relabelled(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, SINGLE)
    axes = study_figures(run(spec, 2), spec)["intermediate_values"].axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("Epoch", "val_acc1 (fraction: 0.11 = 11%)")


# A conditional parameter is 0 where a trial lacks it, on a numeric axis with no "None" tick, in visible colours.
def test_parallel_coordinates_have_no_none_tick_and_dark_lines(tmp_path: Path) -> None:
    from matplotlib.collections import LineCollection

    spec, _ = load_study("smoke")
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: spec.suggest(t) and t.number / 10, n_trials=8)
    assert any("stages.depth_1" not in t.params for t in study.trials)  # 1-stage trials
    axes = study_figures(study, spec)["parallel_coordinate"].axes[0]
    labels = [text.get_text() for text in axes.figure.findobj(match=lambda a: hasattr(a, "get_text"))]
    assert "None" not in labels
    lines = next(c for c in axes.collections if isinstance(c, LineCollection))
    lightest = max(sum(lines.get_cmap()(x)[:3]) for x in (0.0, 1.0))
    assert lightest < 2.4  # no end of the scale is near white (3.0)


# A one-trial study's history has one whole-number tick, not -0.045 ... 0.045.
def test_one_trial_axis_has_whole_ticks() -> None:
    import matplotlib.pyplot as plt

    from hvit_sweeps.plots import _integer_x

    figure, axes = plt.subplots()
    axes.plot([0], [0.03], "o")
    _integer_x(axes)
    figure.canvas.draw()
    low, high = axes.get_xlim()
    assert [tick for tick in axes.get_xticks() if low <= tick <= high] == [0]
    plt.close(figure)
