"""Study files: validation with one clear message each, and trial-to-config mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from hvit_sweeps.errors import HvitError
from hvit_sweeps.study import StudySpec, find_study_files, load_study
from hvit_sweeps.trial_sampler import TrialSeededSampler

SMOKE_HEAD = """
name = "t"
max_epochs = 2
[fixed]
"data.dataset" = "synthetic"
"model.patch_size" = 4
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(body)
    return path


def test_shipped_studies_all_load() -> None:
    # Every file in studies/ validates, including the four the product promises.
    names = {load_study(path)[0].name for path in find_study_files()}
    assert {"depth-width", "optimizer", "pareto", "smoke"} <= names


def test_study_by_name_and_by_path_agree() -> None:
    # `smoke` and `studies/smoke.toml` name the same study.
    by_name, _ = load_study("smoke")
    by_path, _ = load_study(Path(__file__).resolve().parents[1] / "studies" / "smoke.toml")
    assert by_name == by_path


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (SMOKE_HEAD + "colour = 'red'\n", "colour: unknown setting"),
        (SMOKE_HEAD + '[space."optim.lr"]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n', "low (0.1) > high (0.01)"),
        (SMOKE_HEAD + '[space."data.batch_size"]\ntype = "categorical"\nchoices = []\n', "choices"),
        (
            SMOKE_HEAD + '[space."optim.momentum"]\ntype = "float"\nlow = 0.1\nhigh = 0.9\n',
            "no setting 'optim.momentum'",
        ),
        (
            SMOKE_HEAD + '[space."optim.lr"]\ntype = "float"\nlow = 0.0\nhigh = 0.1\nlog = true\n',
            "log = true needs low > 0",
        ),
        (SMOKE_HEAD + '[objective]\nmetric = "val_f1"\n', "unknown metric 'val_f1'"),
        (  # a Pareto study prunes on its first objective, so that must have per-epoch values
            SMOKE_HEAD
            + '[[objectives]]\nmetric = "params_m"\ndirection = "minimize"\n[[objectives]]\nmetric = "val_acc1"\n',
            "needs a per-epoch first objective",
        ),
        (
            SMOKE_HEAD
            + '[pruner]\ntype = "hyperband"\n[[objectives]]\nmetric = "val_acc1"\n[[objectives]]\nmetric = "latency_ms"\n',
            "prunes with median or percentile",
        ),
        (SMOKE_HEAD + "[stages]\nnum_stages = { type = 'int', low = 2, high = 5 }\n", "allow 4: lower its high"),
        (SMOKE_HEAD + '[space."data.batch_size"]\ntype = "categorical"\nchoices = ["big"]\n', "data.batch_size"),
        (SMOKE_HEAD + "name2 = \n", "not valid TOML"),
        (SMOKE_HEAD.replace('"t"', '"bad name!"'), "name: String should match pattern"),
    ],
)
def test_bad_study_file_names_file_field_and_problem(tmp_path: Path, body: str, phrase: str) -> None:
    # Each kind of mistake gives its own message, prefixed with the file's path.
    path = write(tmp_path, body)
    with pytest.raises(HvitError) as caught:
        load_study(path)
    message = str(caught.value)
    assert str(path) in message and phrase in message, message


def test_unknown_study_name_lists_the_known_ones() -> None:
    # A typo in a study name says which names exist.
    with pytest.raises(HvitError, match="use one of .*smoke"):
        load_study("smokey")


def test_stage_space_never_samples_an_invalid_model(tmp_path: Path) -> None:
    # Random draws over the whole stage space always build a valid config.
    spec, _ = load_study("depth-width")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    for _ in range(60):
        trial = study.ask()
        config = spec.trial_config(spec.suggest(trial), {"data.dataset": "synthetic"})
        model = config.model
        assert len(model.embed_dims) == len(model.depths) == len(model.num_heads)
        assert all(d % h == 0 for d, h in zip(model.embed_dims, model.num_heads, strict=True))
        study.tell(trial, 0.0)


def test_trial_parameters_are_config_paths() -> None:
    # An Optuna parameter named optim.lr sets exactly config.optim.lr.
    spec, _ = load_study("optimizer")
    trial = optuna.create_study(direction="maximize").ask()
    config = spec.trial_config(spec.suggest(trial), {"data.dataset": "synthetic"})
    assert config.optim.lr == trial.params["optim.lr"]
    assert config.data.batch_size == trial.params["data.batch_size"]
    assert config.epochs == spec.max_epochs


def test_cli_layer_overrides_the_study_dataset() -> None:
    # --dataset on the command line wins over the study's fixed dataset, and reshapes the model.
    spec, _ = load_study("smoke", cli={"data.dataset": "fashion-mnist"})
    config = spec.trial_config({}, {"data.dataset": "fashion-mnist"})
    assert (config.data.dataset, config.model.in_chans, config.model.image_size) == ("fashion-mnist", 1, 28)


def test_grid_sampler_enumerates_finite_spaces(tmp_path: Path) -> None:
    # A grid study over a categorical and a stepped int covers every combination.
    body = SMOKE_HEAD + (
        '[sampler]\ntype = "grid"\n'
        '[space."data.batch_size"]\ntype = "categorical"\nchoices = [32, 64]\n'
        '[space."model.patch_size"]\ntype = "int"\nlow = 2\nhigh = 4\nstep = 2\n'
    )
    spec, _ = load_study(write(tmp_path, body))
    assert spec.grid_space() == {"data.batch_size": [32, 64], "model.patch_size": [2, 4]}
    sampler = spec.make_sampler()
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: float(len(spec.suggest(t))), n_trials=4)
    seen = {(t.params["data.batch_size"], t.params["model.patch_size"]) for t in study.trials}
    assert seen == {(32, 2), (32, 4), (64, 2), (64, 4)}


def test_grid_sampler_refuses_continuous_parameters(tmp_path: Path) -> None:
    # A float range without a step has no grid.
    body = SMOKE_HEAD + '[sampler]\ntype = "grid"\n[space."optim.lr"]\ntype = "float"\nlow = 0.001\nhigh = 0.01\n'
    with pytest.raises(HvitError, match="finite set"):
        load_study(write(tmp_path, body))


# Two floats: CMA-ES samples them jointly (one alone it hands to its fallback sampler).
TWO_FLOATS = (
    '[space."optim.lr"]\ntype = "float"\nlow = 0.001\nhigh = 0.01\n'
    '[space."optim.weight_decay"]\ntype = "float"\nlow = 0.0\nhigh = 0.1\n'
)
GRID = '[space."data.batch_size"]\ntype = "categorical"\nchoices = [32, 64, 128]\n'


def draws(sampler: optuna.samplers.BaseSampler, spec_space: StudySpec, *, trials: int = 5) -> list[dict[str, Any]]:
    """The params a sampler suggests for the spec's space, each trial scored by a fixed function of them."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: sum(float(v) for v in spec_space.suggest(t).values()), n_trials=trials)
    return [t.params for t in study.trials]


# (kind, extra settings, space, the sampler the spec must build for a seed: its type and startup count).
SAMPLERS = [
    ("tpe", "n_startup_trials = 2", TWO_FLOATS, lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=2)),
    ("random", "", TWO_FLOATS, lambda s: optuna.samplers.RandomSampler(seed=s)),
    ("gp", "n_startup_trials = 2", TWO_FLOATS, lambda s: optuna.samplers.GPSampler(seed=s, n_startup_trials=2)),
    ("cmaes", "n_startup_trials = 2", TWO_FLOATS, lambda s: optuna.samplers.CmaEsSampler(seed=s, n_startup_trials=2)),
    ("nsga2", "", TWO_FLOATS, lambda s: optuna.samplers.NSGAIISampler(seed=s)),
]


@pytest.mark.parametrize(("kind", "settings", "space", "reference"), SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_each_sampler_is_the_named_type_with_its_settings(
    tmp_path: Path, kind: str, settings: str, space: str, reference: Callable[[int], optuna.samplers.BaseSampler]
) -> None:
    # Each trial is drawn by the named Optuna sampler with its startup count, seeded from (seed 7, trial number):
    # it draws exactly what that sampler, built by hand and reseeded the same way, draws. Optuna keeps these private.
    spec, _ = load_study(write(tmp_path, SMOKE_HEAD + f'[sampler]\ntype = "{kind}"\nseed = 7\n{settings}\n' + space))
    sampler = spec.make_sampler()
    assert isinstance(sampler, TrialSeededSampler) and type(sampler.inner) is type(reference(0))
    assert draws(sampler, spec) == draws(TrialSeededSampler(reference, seed=7), spec)


def test_grid_keeps_one_seeded_sampler(tmp_path: Path) -> None:
    # A grid study picks untried cells itself: its sampler is Optuna's GridSampler with the study's seed.
    spec, _ = load_study(write(tmp_path, SMOKE_HEAD + '[sampler]\ntype = "grid"\nseed = 7\n' + GRID))
    expected = optuna.samplers.GridSampler({"data.batch_size": [32, 64, 128]}, seed=7)
    assert draws(spec.make_sampler(), spec, trials=3) == draws(expected, spec, trials=3)


def draws_in_processes(spec: StudySpec, *, sessions: int, per_session: int) -> list[tuple[Any, ...]]:
    """Param sets of one study extended by several sessions, each with a fresh sampler, as new processes would."""
    storage = optuna.storages.InMemoryStorage()
    for _ in range(sessions):
        study = optuna.create_study(
            study_name="s", storage=storage, sampler=spec.make_sampler(), direction="maximize", load_if_exists=True
        )
        study.optimize(lambda t: sum(float(v) for v in spec.suggest(t).values()), n_trials=per_session)
    return [tuple(sorted(t.params.items())) for t in optuna.load_study(study_name="s", storage=storage).trials]


@pytest.mark.parametrize("kind", ["tpe", "random", "gp", "cmaes", "nsga2"])
def test_every_new_process_draws_new_trials_and_one_run_is_reproducible(tmp_path: Path, kind: str) -> None:
    # Three sessions of one trial each (a second `run`, a --resume, a worker) draw three different configs,
    # each trial what the same trial of an uninterrupted run draws; and a fresh study repeats them exactly.
    spec, _ = load_study(write(tmp_path, SMOKE_HEAD + f'[sampler]\ntype = "{kind}"\n' + TWO_FLOATS))
    extended = draws_in_processes(spec, sessions=3, per_session=1)
    assert len(set(extended)) == 3, extended
    assert extended == draws_in_processes(spec, sessions=1, per_session=3)


def first_pruned_step(pruner: optuna.pruners.BasePruner, *, epochs: int = 3) -> int | None:
    """The epoch at which a trial at 0.0 is pruned after one finished trial at 1.0 (maximize); None if never."""
    study = optuna.create_study(pruner=pruner, direction="maximize", study_name="pruned")
    for value in (1.0, 0.0):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch
        study.tell(trial, value)
    return None


# (kind, settings, the Optuna type, the epoch at which the settings make the bad trial pruned).
PRUNERS = [
    ("median", "n_startup_trials = 1\nn_warmup_steps = 2", optuna.pruners.MedianPruner, 2),
    ("percentile", "percentile = 10.0\nn_startup_trials = 1\nn_warmup_steps = 3", optuna.pruners.PercentilePruner, 3),
    # max_epochs 3 over min_resource 2 leaves Hyperband one bracket: its first rung is at epoch 2.
    ("hyperband", "min_resource = 2", optuna.pruners.HyperbandPruner, 2),
    ("successive-halving", "min_resource = 2", optuna.pruners.SuccessiveHalvingPruner, 2),
    ("threshold", "lower = 0.5\nn_warmup_steps = 2", optuna.pruners.ThresholdPruner, 2),
    ("none", "", optuna.pruners.NopPruner, None),
]


@pytest.mark.parametrize(("kind", "settings", "expected_type", "pruned_at"), PRUNERS, ids=[p[0] for p in PRUNERS])
def test_each_pruner_is_the_named_type_with_its_settings(
    tmp_path: Path, kind: str, settings: str, expected_type: type, pruned_at: int | None
) -> None:
    # The spec builds the named Optuna pruner, and its warm-up, startup count or first rung decide when it prunes.
    body = SMOKE_HEAD.replace("max_epochs = 2", "max_epochs = 3") + f'[pruner]\ntype = "{kind}"\n{settings}\n'
    spec, _ = load_study(write(tmp_path, body))
    pruner = spec.make_pruner()
    assert type(pruner) is expected_type
    assert first_pruned_step(pruner) == pruned_at


# Startup trials are honoured: with fewer finished trials than n_startup_trials, the median pruner never prunes.
def test_median_pruner_waits_for_its_startup_trials(tmp_path: Path) -> None:
    spec, _ = load_study(
        write(tmp_path, SMOKE_HEAD + '[pruner]\ntype = "median"\nn_startup_trials = 2\nn_warmup_steps = 0\n')
    )
    assert first_pruned_step(spec.make_pruner()) is None


@pytest.mark.parametrize(("percentile", "pruned"), [(25.0, True), (90.0, False)])
def test_percentile_pruner_keeps_the_named_share(tmp_path: Path, percentile: float, pruned: bool) -> None:
    # Maximizing, percentile 25 keeps only trials in the top quarter; 90 keeps all but the bottom tenth.
    settings = f'[pruner]\ntype = "percentile"\npercentile = {percentile}\nn_startup_trials = 1\nn_warmup_steps = 0\n'
    spec, _ = load_study(write(tmp_path, SMOKE_HEAD + settings))
    study = optuna.create_study(pruner=spec.make_pruner(), direction="maximize")
    for value in (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9):
        study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={1: value}))
    trial = study.ask()
    trial.report(0.5, 1)  # the median: below the top quarter, above the bottom tenth
    assert bool(trial.should_prune()) is pruned


def test_every_trial_gets_every_param_with_a_placeholder_for_absent_stages() -> None:
    # A 1-stage smoke trial samples no stages.depth_1; it is logged as HP_NOT_APPLICABLE, below real depths.
    from hvit_sweeps.keys import HP_NOT_APPLICABLE

    spec, _ = load_study("smoke")
    sampled = {"optim.lr": 0.003, "stages.num_stages": 1, "stages.base_width": 16, "stages.depth_0": 2}
    tracked = spec.tracked_params(sampled)
    assert set(tracked) == set(spec.param_names()) and "stages.depth_1" in tracked
    assert tracked["stages.depth_1"] == HP_NOT_APPLICABLE < 1 and tracked["stages.depth_0"] == 2
