"""Study definitions: ``studies/*.toml`` files, validated once by pydantic.

A study names its objective(s), its sampler and pruner, the training settings it
fixes, and its search space. Space entries are keyed by config path
(``"optim.lr"``), so an Optuna parameter *is* the config field it sets and
nothing is typed twice. The optional ``[stages]`` table searches the stage-wise
architecture in a form that is valid by construction: stage widths grow from a
base width by a multiplier, are rounded to a multiple of the head dimension, and
heads follow as width / head_dim, so no sampled combination can fail to build.

The spec maps a trial to config overrides; it never sees the model.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hvit_sweeps.config import (
    TrainConfig,
    build_config,
    format_validation_error,
    has_field,
    max_stages,
)
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import HP_NOT_APPLICABLE, best_metric
from hvit_sweeps.metrics import cost_metrics, objectives, tracked_metric
from hvit_sweeps.search import (
    GridSamplerSpec,
    MedianPrunerSpec,
    NoPrunerSpec,
    PrunerSpec,
    RankPrunerSpec,
    SamplerSpec,
    TpeSamplerSpec,
    fingerprint_fields,
    make_pruner,
    make_sampler,
)

if TYPE_CHECKING:  # a study file is checked with pydantic alone: Optuna loads when a sampler is built
    import optuna

    from hvit_sweeps.data import DatasetInfo

__all__ = [
    "StudySpec",
    "find_study_files",
    "load_study",
    "studies_dir",
]

_ARCHITECTURE_PATHS = ("model.embed_dims", "model.depths", "model.num_heads")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def extremes(self) -> list[int]:
        return [self.low, self.high]


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log = true")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def values(self) -> list[float] | None:
        if self.step is None:
            return None
        count = int(round((self.high - self.low) / self.step))
        return [self.low + i * self.step for i in range(count + 1)]

    def extremes(self) -> list[float]:
        return [self.low, self.high]


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[bool | int | float | str] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)

    def values(self) -> list[Any]:
        return list(self.choices)

    def extremes(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[IntParam | FloatParam | CategoricalParam, Field(discriminator="type")]
Knob = int | float | Param


def _check_range(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) > high ({high}): swap them")
    if log and low <= 0:
        raise ValueError(f"log = true needs low > 0, got {low}")


class StagesSpace(_Strict):
    """Stage-wise architecture search that always yields a valid model.

    Each knob is a constant or a parameter table. Stage ``i`` gets width
    ``base_width * width_mult**i`` rounded to a multiple of ``head_dim`` (at least
    one head), ``width / head_dim`` heads, and its own depth ``depth`` (sampled per
    stage as ``stages.depth_<i>``).
    """

    num_stages: Knob = 3
    base_width: Knob = 64
    width_mult: Knob = 2.0
    head_dim: Knob = 32
    depth: Knob = 2

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        num = int(self._pick(trial, "num_stages"))
        base, mult, head_dim = (self._pick(trial, k) for k in ("base_width", "width_mult", "head_dim"))
        depths = tuple(int(self._pick(trial, "depth", f"depth_{i}")) for i in range(num))
        return self.architecture(num, base, mult, int(head_dim), depths)

    @staticmethod
    def architecture(num: int, base: float, mult: float, head_dim: int, depths: tuple[int, ...]) -> dict[str, Any]:
        widths = tuple(max(1, round(base * mult**i / head_dim)) * head_dim for i in range(num))
        return {
            "model.embed_dims": widths,
            "model.depths": depths,
            "model.num_heads": tuple(w // head_dim for w in widths),
        }

    def _pick(self, trial: optuna.Trial, knob: str, name: str | None = None) -> Any:
        value = getattr(self, knob)
        if isinstance(value, (int, float)):
            return value
        return value.suggest(trial, f"stages.{name or knob}")

    def knob_values(self, knob: str) -> list[Any] | None:
        value = getattr(self, knob)
        return [value] if isinstance(value, (int, float)) else value.values()

    def knob_extremes(self, knob: str) -> list[Any]:
        value = getattr(self, knob)
        return [value] if isinstance(value, (int, float)) else value.extremes()

    def corner_architectures(self) -> Iterable[dict[str, Any]]:
        """The architectures at the corners of the space, for checking the file."""
        for num in self.knob_extremes("num_stages"):
            for base in self.knob_extremes("base_width"):
                for mult in self.knob_extremes("width_mult"):
                    for head_dim in self.knob_extremes("head_dim"):
                        for depth in self.knob_extremes("depth"):
                            yield self.architecture(int(num), base, mult, int(head_dim), (int(depth),) * int(num))


class Objective(_Strict):
    metric: str = "val_acc1"
    direction: Literal["maximize", "minimize"] = "maximize"

    @model_validator(mode="after")
    def _known(self) -> Objective:
        known = objectives()
        if self.metric not in known:
            raise ValueError(f"unknown metric {self.metric!r}: use one of {', '.join(known)}")
        return self


class StudySpec(_Strict):
    """One study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    trials: int = Field(20, ge=1, description="Trials that `run` adds when --trials is not given.")
    max_epochs: int = Field(20, ge=1, description="Each trial's epoch budget.")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1)
    sampler: SamplerSpec = TpeSamplerSpec()
    pruner: PrunerSpec = MedianPrunerSpec()
    keep_top_k: int | None = Field(None, ge=1, description="Keep checkpoints of the best k trials only.")
    visuals: bool = Field(True, description="Log per-trial visuals (confusion matrix, ...) for kept checkpoints.")
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(default_factory=dict)
    stages: StagesSpace | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_objective_table(cls, data: Any) -> Any:
        # `[objective]` for the common single-objective case, `[[objectives]]` for Pareto.
        if isinstance(data, dict) and "objective" in data:
            if "objectives" in data:
                raise ValueError("give [objective] or [[objectives]], not both")
            data = {**data, "objectives": [data["objective"]]}
            del data["objective"]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        for path in self.space:
            if not has_field(path):
                raise ValueError(f"space.{path}: the trainer has no setting {path!r} (see `hvit-sweep train --help`)")
            if self.stages is not None and path in _ARCHITECTURE_PATHS:
                raise ValueError(f"space.{path}: set by [stages]; remove one of the two")
        if "epochs" in self.fixed or "epochs" in self.space:
            raise ValueError("epochs: use max_epochs at the top of the file")
        # A Pareto study prunes on its first objective by hvit_sweeps.sweep.prune's median/percentile rule.
        if self.multi_objective and not isinstance(self.pruner, NoPrunerSpec | RankPrunerSpec):
            raise ValueError(
                f"pruner {self.pruner.type}: a study of several objectives prunes with median or percentile "
                '(on its first objective), or set [pruner] type = "none"'
            )
        if self.multi_objective and self.pruner.type != "none" and self.objectives[0].metric not in objectives("epoch"):
            raise ValueError(
                f"pruning a study of several objectives needs a per-epoch first objective ({', '.join(objectives('epoch'))}), "
                f'not {self.objectives[0].metric}: put it first, or set [pruner] type = "none"'
            )
        if isinstance(self.sampler, GridSamplerSpec) and self.grid_space() is None:
            raise ValueError("sampler grid: every parameter needs a finite set (categorical, int, or float with step)")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return [o.direction for o in self.objectives]

    @property
    def fingerprint(self) -> str:
        """Hash of everything that defines the search, to refuse mixing two studies."""
        fields = self.model_dump(mode="json", exclude={"description", "trials", "keep_top_k"})
        fields.update(fingerprint_fields(self.sampler, self.pruner))
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Config overrides for one trial, keyed by config path."""
        values = {path: param.suggest(trial, path) for path, param in self.space.items()}
        if self.stages is not None:
            values.update(self.stages.suggest(trial))
        return values

    def base_layers(self, cli: dict[str, Any]) -> list[dict[str, Any]]:
        """Layers under a trial's parameters: the study's fixed settings, then CLI flags."""
        monitor = self.objectives[0].metric
        study_layer = {**self.fixed, "epochs": self.max_epochs}
        if monitor.startswith("val_"):
            study_layer["monitor"] = monitor
        return [study_layer, cli]

    def trial_config(
        self, overrides: dict[str, Any], cli: dict[str, Any], *, info: DatasetInfo | None = None
    ) -> TrainConfig:
        return build_config(*self.base_layers(cli), overrides, source=f"study {self.name}", info=info)

    def param_names(self) -> list[str]:
        """The Optuna parameter names a trial of this study may sample, in file order."""
        return [*self.space, *self._stage_params()]

    def tracked_params(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's values for every parameter of the study: those it did not sample are HP_NOT_APPLICABLE.

        A 1-stage trial samples no ``stages.depth_1``; logging the same keys for every
        trial keeps it on MLflow's parallel-coordinates chart, which drops a run that
        lacks an axis.
        """
        return {**{name: HP_NOT_APPLICABLE for name in self.param_names()}, **sampled}

    def charted_summaries(self) -> set[str]:
        """The one-point trial figures kept as MLflow metrics: what the view sorts and shows, and the report reads."""
        return {tracked_metric(o.metric) for o in self.objectives} | {
            best_metric("val_acc1"),
            *(tracked_metric(m) for m in objectives("size")),
            # Issue 23's measured cost is a metric on every trial (the view's columns and chart, the report's
            # axes, comparisons in MLflow); its charts sit in their own "cost" section of the run page.
            *(tracked_metric(m) for m in cost_metrics()),
        }

    def grid_space(self) -> dict[str, list[Any]] | None:
        grid: dict[str, list[Any]] = {}
        for path, param in self.space.items():
            values = param.values()
            if values is None:
                return None
            grid[path] = values
        for name, stage_values in self._stage_params().items():
            if stage_values is None:
                return None
            grid[name] = stage_values
        return grid

    def _stage_params(self) -> dict[str, list[Any] | None]:
        """The searched knobs of ``[stages]`` by parameter name, with their values (None: continuous)."""
        if self.stages is None:
            return {}
        params = {
            f"stages.{knob}": self.stages.knob_values(knob)
            for knob in ("num_stages", "base_width", "width_mult", "head_dim")
            if not isinstance(getattr(self.stages, knob), (int, float))
        }
        if not isinstance(self.stages.depth, (int, float)):
            for i in range(int(max(self.stages.knob_extremes("num_stages")))):
                params[f"stages.depth_{i}"] = self.stages.knob_values("depth")
        return params

    def check_buildable(self, cli: dict[str, Any]) -> None:
        """Build a config at every corner of the space, so a bad file fails now, not in trial 37."""
        base = self.base_layers(cli)
        config = build_config(*base, source=f"study {self.name}: fixed")
        for path, param in self.space.items():
            for value in param.extremes():
                build_config(*base, {path: value}, source=f"study {self.name}: space.{path} = {value!r}")
        if self.stages is not None:
            limit = max_stages(config.model.image_size, config.model.patch_size)
            most = max(int(v) for v in self.stages.knob_extremes("num_stages"))
            if most > limit:
                raise HvitError(
                    f"study {self.name}: stages.num_stages: up to {most} stages, but the "
                    f"{config.model.image_size}px images with patch {config.model.patch_size} allow {limit}: lower its high"
                )
            for arch in self.stages.corner_architectures():
                build_config(*base, arch, source=f"study {self.name}: stages")

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler; its randomness is keyed to each trial's number, not to the process (but for grid)."""
        return make_sampler(self.sampler, grid=self.grid_space() if isinstance(self.sampler, GridSamplerSpec) else None)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.pruner, max_epochs=self.max_epochs)

    def objective_values(self, metrics: dict[str, float]) -> list[float]:
        return [metrics[o.metric] for o in self.objectives]


def studies_dir() -> Path:
    """``./studies`` if the working directory has one, else the one beside the package."""
    local = Path.cwd() / "studies"
    return local if local.is_dir() else Path(__file__).resolve().parent.parent / "studies"


def find_study_files() -> list[Path]:
    return sorted(studies_dir().glob("*.toml"))


def load_study(name_or_path: str | Path, *, cli: dict[str, Any] | None = None) -> tuple[StudySpec, Path]:
    """Read, validate and check a study given by name (``studies/NAME.toml``) or by path.

    Raises:
        HvitError: naming the file, the field and the problem.
    """
    path = _locate(str(name_or_path))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise HvitError(f"{path}: not valid TOML ({err}): fix the syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise HvitError(f"{path}: cannot read the study file ({err})") from None
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise HvitError(format_validation_error(err, source=str(path))) from None
    try:
        spec.check_buildable(cli or {})
    except HvitError as err:
        raise HvitError(f"{path}: {err}") from None
    return spec, path


def _locate(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or len(path.parts) > 1:
        if not path.is_file():
            raise HvitError(f"study file not found: {path}")
        return path
    candidate = studies_dir() / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    known = ", ".join(p.stem for p in find_study_files()) or "none"
    raise HvitError(
        f"no study named {name_or_path!r} in {studies_dir()}: use one of {known}, or a path to a .toml file"
    )
