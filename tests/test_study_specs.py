"""Tests for hvit_sweeps.search: one model per sampler and pruner type, each built by its factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import optuna
import pytest
from conftest import cli, hvit, tiny_study

from hvit_sweeps.errors import HvitError
from hvit_sweeps.search import PRUNER_FACTORIES, SAMPLER_FACTORIES, PrunerSpec, SamplerSpec
from hvit_sweeps.study import StudySpec, load_study
from hvit_sweeps.trial_sampler import TrialSeededSampler

GRID_SPACE = {"optim.lr": {"type": "categorical", "choices": [1e-3, 2e-3]}}


def _spec(**tables: Any) -> StudySpec:
    return StudySpec.model_validate({"name": "t", "max_epochs": 12, "space": GRID_SPACE, **tables})


# Every model of each union has a factory, and every factory a model: the table is the whole list.
def test_the_tables_cover_the_unions() -> None:
    assert set(get_args(get_args(SamplerSpec)[0])) == set(SAMPLER_FACTORIES)
    assert set(get_args(get_args(PrunerSpec)[0])) == set(PRUNER_FACTORIES)


@pytest.mark.parametrize(
    ("table", "inner", "settings"),
    [
        ({"type": "tpe", "n_startup_trials": 7}, optuna.samplers.TPESampler, {"_n_startup_trials": 7}),
        ({"type": "random"}, optuna.samplers.RandomSampler, {}),
        ({"type": "gp", "n_startup_trials": 4}, optuna.samplers.GPSampler, {"_n_startup_trials": 4}),
        ({"type": "cmaes", "n_startup_trials": 3}, optuna.samplers.CmaEsSampler, {"_n_startup_trials": 3}),
        ({"type": "nsga2"}, optuna.samplers.NSGAIISampler, {}),
    ],
)
def test_each_sampler_type_builds_its_optuna_sampler(table: dict[str, Any], inner: type, settings: dict) -> None:
    sampler = _spec(sampler={**table, "seed": 5}).make_sampler()
    assert isinstance(sampler, TrialSeededSampler) and sampler._seed == 5  # keyed to trial numbers
    assert type(sampler.inner) is inner
    assert {name: getattr(sampler.inner, name) for name in settings} == settings


def test_grid_keeps_one_seeded_sampler_over_the_study_space() -> None:
    sampler = _spec(sampler={"type": "grid", "seed": 3}).make_sampler()
    assert isinstance(sampler, optuna.samplers.GridSampler)
    assert sampler._search_space == {"optim.lr": [1e-3, 2e-3]}


@pytest.mark.parametrize(
    ("table", "pruner", "settings"),
    [
        ({"type": "none"}, optuna.pruners.NopPruner, {}),
        (
            {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 3},
            optuna.pruners.MedianPruner,
            {"_n_startup_trials": 2, "_n_warmup_steps": 3, "_percentile": 50.0},
        ),
        (
            {"type": "percentile", "percentile": 40.0, "n_startup_trials": 1},
            optuna.pruners.PercentilePruner,
            {"_percentile": 40.0, "_n_startup_trials": 1, "_n_warmup_steps": 1},
        ),
        (
            {"type": "hyperband", "min_resource": 2, "reduction_factor": 4},
            optuna.pruners.HyperbandPruner,
            {"_min_resource": 2, "_max_resource": 12, "_reduction_factor": 4},  # max_resource: the study's max_epochs
        ),
        (
            {"type": "successive-halving", "min_resource": 2, "reduction_factor": 4},
            optuna.pruners.SuccessiveHalvingPruner,
            {"_min_resource": 2, "_reduction_factor": 4},
        ),
        (
            {"type": "threshold", "lower": 0.2, "n_warmup_steps": 2},
            optuna.pruners.ThresholdPruner,
            {"_lower": 0.2, "_n_warmup_steps": 2},
        ),
    ],
)
def test_each_pruner_type_builds_its_optuna_pruner(table: dict[str, Any], pruner: type, settings: dict) -> None:
    built = _spec(pruner=table).make_pruner()
    assert type(built) is pruner
    assert {name: getattr(built, name) for name in settings} == settings


# A table without `type` is the default type, as before the union: tpe and median.
def test_a_table_without_type_is_the_default_type() -> None:
    spec = _spec(sampler={"seed": 4}, pruner={"n_warmup_steps": 2})
    assert (spec.sampler.type, spec.sampler.seed, spec.pruner.type) == ("tpe", 4, "median")
    assert isinstance(_spec().make_pruner(), optuna.pruners.MedianPruner)


# The fingerprint stored in a study is of the flat tables of before, so older studies still resume.
def test_fingerprint_is_that_of_the_flat_tables() -> None:
    assert StudySpec(name="f").fingerprint == "1f41efba0889df51"
    random_hyperband = {"sampler": {"type": "random", "seed": 3}, "pruner": {"type": "hyperband", "min_resource": 2}}
    assert StudySpec.model_validate({"name": "f", **random_hyperband}).fingerprint == "ebda275fa2145ade"
    gp_threshold = {
        "sampler": {"type": "gp", "n_startup_trials": 4},
        "pruner": {"type": "threshold", "lower": 0.1, "n_warmup_steps": 2},
    }
    assert StudySpec.model_validate({"name": "f", **gp_threshold}).fingerprint == "9b2900fbd2612634"


@pytest.mark.parametrize(
    ("table", "phrase"),
    [
        (
            '[pruner]\ntype = "median"\npercentile = 10.0\n',
            "pruner.percentile: not a setting of the median pruner (its settings: n_startup_trials, n_warmup_steps)",
        ),
        (
            '[pruner]\ntype = "hyperband"\nn_warmup_steps = 2\n',
            "pruner.n_warmup_steps: not a setting of the hyperband pruner (its settings: min_resource, "
            "reduction_factor)",
        ),
        (
            '[pruner]\ntype = "none"\nn_startup_trials = 2\n',
            "pruner.n_startup_trials: not a setting of the none pruner",
        ),
        (
            '[sampler]\ntype = "nsga2"\nn_startup_trials = 5\n',
            "sampler.n_startup_trials: not a setting of the nsga2 sampler (its settings: seed)",
        ),
        ('[sampler]\ntype = "random"\nsede = 1\n', "sampler.sede: not a setting of the random sampler"),
        ('[pruner]\ntype = "threshold"\n', "pruner: a threshold pruner needs lower or upper"),
        ('[pruner]\ntype = "percentile"\npercentile = 150.0\n', "pruner.percentile: Input should be less than 100"),
        ('[pruner]\ntype = "medium"\n', "pruner.type: unknown pruner 'medium': use one of none, median, percentile"),
    ],
)
def test_a_setting_of_another_type_is_refused_by_name(tmp_path: Path, table: str, phrase: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(tiny_study("bad").replace('[pruner]\ntype = "none"\n', "") + table)
    with pytest.raises(HvitError) as caught:
        load_study(path)
    assert phrase in str(caught.value) and str(caught.value).startswith(f"{path}: ")


def _bad_study(folder: Path) -> Path:
    path = folder / "bad.toml"
    path.write_text(tiny_study("bad", pruner='type = "median"\npercentile = 10.0'))
    return path


# The project's study-file error path: exit 2, one line, no traceback.
def test_the_cli_refuses_it_in_one_line(tmp_path: Path) -> None:
    done = cli("run", "--study", str(_bad_study(tmp_path)), "--root", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
    assert "pruner.percentile: not a setting of the median pruner" in done.stderr


@pytest.mark.slow
def test_the_console_script_refuses_it_in_one_line(workdir: Path) -> None:
    done = hvit("run", "--study", str(_bad_study(workdir)), cwd=workdir, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert "pruner.percentile: not a setting of the median pruner" in done.stderr
