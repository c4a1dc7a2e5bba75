"""How a study searches: its ``[sampler]`` and ``[pruner]`` tables and the Optuna objects they build.

Each sampler and pruner type is a pydantic model with only its own settings; the
``type`` key picks the model (a discriminated union, as the search space's
parameters are), and a table maps each model to the function that builds its
Optuna object. A setting of another type is refused with the field and the
type's own settings named, instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

if TYPE_CHECKING:  # checking a study file needs pydantic only; building its sampler, Optuna
    import optuna

__all__ = [
    "PRUNER_FACTORIES",
    "SAMPLER_FACTORIES",
    "PrunerSpec",
    "RankPrunerSpec",
    "SamplerSpec",
    "fingerprint_fields",
    "make_pruner",
    "make_sampler",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: ClassVar[str]  # "sampler" or "pruner", for messages

    @model_validator(mode="before")
    @classmethod
    def _own_settings(cls, data: Any) -> Any:
        # Named here rather than as pydantic's "Extra inputs are not permitted": a median pruner given
        # `percentile` is a misunderstanding, not a typo, and the fix is the list of what it does take.
        if isinstance(data, Mapping):
            settings = [name for name in cls.model_fields if name != "type"]
            alien = [key for key in data if key not in cls.model_fields]
            if alien:
                kind = cls.model_fields["type"].default
                owned = f"its settings: {', '.join(settings)}" if settings else "it has no settings"
                raise _problems(
                    cls.__name__, [(key, f"not a setting of the {kind} {cls.role} ({owned})") for key in alien]
                )
        return data


# --- samplers ------------------------------------------------------------------


class _SeededSampler(_Spec):
    role = "sampler"
    seed: int = 0


class _StartupSampler(_SeededSampler):
    n_startup_trials: int | None = Field(None, ge=0, description="Random trials before the model; None: Optuna's.")

    def startup(self) -> dict[str, int]:
        return {} if self.n_startup_trials is None else {"n_startup_trials": self.n_startup_trials}


class TpeSamplerSpec(_StartupSampler):
    type: Literal["tpe"] = "tpe"


class RandomSamplerSpec(_SeededSampler):
    type: Literal["random"] = "random"


class GpSamplerSpec(_StartupSampler):
    type: Literal["gp"] = "gp"


class CmaEsSamplerSpec(_StartupSampler):
    type: Literal["cmaes"] = "cmaes"


class Nsga2SamplerSpec(_SeededSampler):
    type: Literal["nsga2"] = "nsga2"


class GridSamplerSpec(_SeededSampler):
    type: Literal["grid"] = "grid"


# --- pruners -------------------------------------------------------------------


class _Pruner(_Spec):
    role = "pruner"


class NoPrunerSpec(_Pruner):
    type: Literal["none"] = "none"


class RankPrunerSpec(_Pruner):
    """The pruners that rank a trial against the completed ones at the same epoch (median, percentile)."""

    n_startup_trials: int = Field(5, ge=0, description="Completed trials before pruning starts.")
    n_warmup_steps: int = Field(1, ge=0, description="Epochs before pruning starts.")

    @property
    def kept_percentile(self) -> float:
        """The top percent of trials that go on."""
        return 50.0


class MedianPrunerSpec(RankPrunerSpec):
    type: Literal["median"] = "median"


class PercentilePrunerSpec(RankPrunerSpec):
    type: Literal["percentile"] = "percentile"
    percentile: float = Field(25.0, gt=0, lt=100)

    @property
    def kept_percentile(self) -> float:
        return self.percentile


class _BracketPruner(_Pruner):
    min_resource: int = Field(1, ge=1, description="Epochs every trial gets.")
    reduction_factor: int = Field(3, ge=2)


class HyperbandPrunerSpec(_BracketPruner):
    type: Literal["hyperband"] = "hyperband"


class SuccessiveHalvingPrunerSpec(_BracketPruner):
    type: Literal["successive-halving"] = "successive-halving"


class ThresholdPrunerSpec(_Pruner):
    type: Literal["threshold"] = "threshold"
    lower: float | None = Field(None, description="Prune below this value.")
    upper: float | None = Field(None, description="Prune above this value.")
    n_warmup_steps: int = Field(1, ge=0, description="Epochs before pruning starts.")

    @model_validator(mode="after")
    def _bounded(self) -> ThresholdPrunerSpec:
        if self.lower is None and self.upper is None:
            raise ValueError("a threshold pruner needs lower or upper (or both)")
        return self


# --- the tables ----------------------------------------------------------------

SamplerFactory = Callable[[Any, Mapping[str, Sequence[Any]] | None], "optuna.samplers.BaseSampler"]
PrunerFactory = Callable[[Any, int], "optuna.pruners.BasePruner"]


def _samplers() -> ModuleType:
    import optuna.samplers  # when a sampler is built, not when a study file is checked

    return optuna.samplers


def _pruners() -> ModuleType:
    import optuna.pruners

    return optuna.pruners


def _trial_seeded(build: Callable[[Any, int], optuna.samplers.BaseSampler]) -> SamplerFactory:
    """A factory whose sampler's randomness is keyed to each trial's number, not to the process."""

    def factory(spec: Any, _grid: Mapping[str, Sequence[Any]] | None) -> optuna.samplers.BaseSampler:
        from hvit_sweeps.trial_sampler import TrialSeededSampler

        return TrialSeededSampler(lambda seed: build(spec, seed), seed=spec.seed)

    return factory


def _grid(spec: GridSamplerSpec, grid: Mapping[str, Sequence[Any]] | None) -> optuna.samplers.BaseSampler:
    # Grid studies pick untried cells, so they keep one seeded sampler.
    return _samplers().GridSampler(dict(grid or {}), seed=spec.seed)


SAMPLER_FACTORIES: Mapping[type[_Spec], SamplerFactory] = {
    TpeSamplerSpec: _trial_seeded(lambda s, seed: _samplers().TPESampler(seed=seed, **s.startup())),
    RandomSamplerSpec: _trial_seeded(lambda s, seed: _samplers().RandomSampler(seed=seed)),
    GpSamplerSpec: _trial_seeded(lambda s, seed: _samplers().GPSampler(seed=seed, **s.startup())),
    CmaEsSamplerSpec: _trial_seeded(lambda s, seed: _samplers().CmaEsSampler(seed=seed, **s.startup())),
    Nsga2SamplerSpec: _trial_seeded(lambda s, seed: _samplers().NSGAIISampler(seed=seed)),
    GridSamplerSpec: _grid,
}

# Each factory gets its spec and the study's max_epochs (hyperband's max_resource).
PRUNER_FACTORIES: Mapping[type[_Spec], PrunerFactory] = {
    NoPrunerSpec: lambda s, _epochs: _pruners().NopPruner(),
    MedianPrunerSpec: lambda s, _epochs: _pruners().MedianPruner(
        n_startup_trials=s.n_startup_trials, n_warmup_steps=s.n_warmup_steps
    ),
    PercentilePrunerSpec: lambda s, _epochs: _pruners().PercentilePruner(
        s.percentile, n_startup_trials=s.n_startup_trials, n_warmup_steps=s.n_warmup_steps
    ),
    HyperbandPrunerSpec: lambda s, epochs: _pruners().HyperbandPruner(
        min_resource=s.min_resource, max_resource=epochs, reduction_factor=s.reduction_factor
    ),
    SuccessiveHalvingPrunerSpec: lambda s, _epochs: _pruners().SuccessiveHalvingPruner(
        min_resource=s.min_resource, reduction_factor=s.reduction_factor
    ),
    ThresholdPrunerSpec: lambda s, _epochs: _pruners().ThresholdPruner(
        lower=s.lower, upper=s.upper, n_warmup_steps=s.n_warmup_steps
    ),
}


def _by_type(table: Mapping[type[_Spec], Any]) -> dict[str, type[_Spec]]:
    return {spec.model_fields["type"].default: spec for spec in table}


def _pick(role: str, default: str, table: Mapping[type[_Spec], Any]) -> Callable[[Any], Any]:
    """Validates a raw table as the model its ``type`` names (``default`` when it names none).

    Done here rather than by pydantic's tagged union so that an error's location is
    ``pruner.percentile``, not ``pruner.percentile.percentile`` with the tag in it.
    """
    by_type = _by_type(table)

    def pick(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        kind = value.get("type", default)
        if kind not in by_type:
            raise _problems(role, [("type", f"unknown {role} {kind!r}: use one of {', '.join(by_type)}")])
        return by_type[kind].model_validate(value)

    return pick


SamplerSpec = Annotated[
    TpeSamplerSpec | RandomSamplerSpec | GpSamplerSpec | CmaEsSamplerSpec | Nsga2SamplerSpec | GridSamplerSpec,
    Field(discriminator="type"),
    BeforeValidator(_pick("sampler", "tpe", SAMPLER_FACTORIES)),
]
PrunerSpec = Annotated[
    NoPrunerSpec
    | MedianPrunerSpec
    | PercentilePrunerSpec
    | HyperbandPrunerSpec
    | SuccessiveHalvingPrunerSpec
    | ThresholdPrunerSpec,
    Field(discriminator="type"),
    BeforeValidator(_pick("pruner", "median", PRUNER_FACTORIES)),
]


def make_sampler(spec: _Spec, *, grid: Mapping[str, Sequence[Any]] | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``spec``; ``grid`` is the study's finite space, for a grid sampler."""
    return SAMPLER_FACTORIES[type(spec)](spec, grid)


def make_pruner(spec: _Spec, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner of ``spec``, for trials of ``max_epochs`` epochs."""
    return PRUNER_FACTORIES[type(spec)](spec, max_epochs)


# The flat [sampler] and [pruner] tables before each type had its own model, defaults included. A
# study's stored fingerprint is of this form, so studies made by earlier versions still resume.
_FLAT_SAMPLER: dict[str, Any] = {"seed": 0, "n_startup_trials": None}
_FLAT_PRUNER: dict[str, Any] = {
    "n_startup_trials": 5,
    "n_warmup_steps": 1,
    "percentile": 25.0,
    "min_resource": 1,
    "reduction_factor": 3,
    "lower": None,
    "upper": None,
}


def fingerprint_fields(sampler: _Spec, pruner: _Spec) -> dict[str, dict[str, Any]]:
    """The sampler and pruner as a study's fingerprint hashes them."""
    return {
        "sampler": {**_FLAT_SAMPLER, **sampler.model_dump(mode="json")},
        "pruner": {**_FLAT_PRUNER, **pruner.model_dump(mode="json")},
    }


def _problems(title: str, problems: Sequence[tuple[str, str]]) -> ValidationError:
    """Problems located at their own key: merged into the caller's, they read ``pruner.percentile: ...``."""
    details = [
        InitErrorDetails(type=PydanticCustomError("spec", "{message}", {"message": message}), loc=(key,), input=key)
        for key, message in problems
    ]
    return ValidationError.from_exception_data(title, details)
