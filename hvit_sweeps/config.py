"""One config tree for a training run.

A :class:`TrainConfig` is built in exactly one place, :func:`build_config`, from
layers of plain dicts: defaults, then a study's fixed settings or a checkpoint's
saved config, then trial parameters or CLI flags. Layers use nested dicts or
dotted keys (``"optim.lr"``); later layers win. The dataset decides the model's
input shape and class count, so those three fields are filled from it here and
are never set by hand. The result is validated once and logged flattened.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hvit_sweeps.data import DataConfig, describe_dataset
from hvit_sweeps.errors import HvitError
from hvit_sweeps.model import ModelConfig

__all__ = [
    "OptimConfig",
    "RuntimeConfig",
    "TrainConfig",
    "build_config",
    "field_help",
    "flatten_config",
    "format_validation_error",
    "has_field",
    "validate_config",
]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Fields of ModelConfig that the dataset decides; a user never sets them.
_DATA_SHAPED_FIELDS = ("num_classes", "in_chans", "image_size")
# A union-typed value fails once per member; the first few problems say enough.
_MAX_PROBLEMS = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(_Strict):
    """AdamW with linear warm-up then cosine decay, in decoupled form."""

    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW decoupled weight decay.")
    beta1: float = Field(0.9, gt=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.999, gt=0, lt=1, description="AdamW beta2.")
    warmup_epochs: float = Field(1.0, ge=0, description="Epochs of linear warm-up.")
    min_lr_ratio: float = Field(
        0.01, ge=0, le=1, description="Cosine floor as a fraction of the peak lr."
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing.")
    grad_clip: float = Field(
        1.0, ge=0, description="Max global gradient norm; 0 disables clipping."
    )


class RuntimeConfig(_Strict):
    """Where and how the step runs; none of it changes the maths beyond precision."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    amp: bool = Field(True, description="Mixed precision (autocast).")
    autocast_dtype: Literal["bf16", "fp16"] = Field(
        "bf16", description="Autocast dtype; fp16 adds a gradient scaler."
    )
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile mode, or off."
    )
    cuda_graphs: bool = Field(
        False, description="Capture the whole train step in a CUDA graph (CUDA only)."
    )
    channels_last: bool = Field(False, description="channels_last memory format.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.match(value):
            raise ValueError(f"unknown device {value!r}: use auto, cpu, cuda, cuda:N or mps")
        return value


class TrainConfig(_Strict):
    """Everything one training run needs; a sweep trial is one of these."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    epochs: int = Field(20, ge=1, description="Training epochs.")
    seed: int = Field(0, ge=0, description="Seed for the split, init and augmentation.")
    monitor: Literal["val_acc1", "val_acc5", "val_loss"] = Field(
        "val_acc1", description="Validation metric that picks the best epoch."
    )
    checkpoint_path: Path | None = Field(
        None, description="Where to save the best-by-validation checkpoint."
    )
    save_final: bool = Field(
        False, description="Also keep the last epoch's checkpoint (<name>_last.pth)."
    )
    evaluate_test: bool = Field(
        False, description="Evaluate the best weights on the test set at the end."
    )

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "min" if self.monitor.endswith("loss") else "max"

    @property
    def last_checkpoint_path(self) -> Path | None:
        if self.checkpoint_path is None:
            return None
        path = self.checkpoint_path
        return path.with_name(f"{path.stem}_last{path.suffix or '.pth'}")


def build_config(*layers: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """Merge layers over the defaults, fill the dataset's shape in, validate once.

    Args:
        layers: Dicts of overrides, nested or with dotted keys; later ones win.
        source: Names where the values came from, for error messages.

    Raises:
        HvitError: One line per bad field, each naming the field and the problem.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        _deep_merge(merged, _expand_dotted(layer, source=source))
    for name in _DATA_SHAPED_FIELDS:
        merged.get("model", {}).pop(name, None)
    try:
        data = DataConfig.model_validate(merged.get("data", {}))
        info = describe_dataset(data)
        merged.setdefault("model", {}).update(
            num_classes=info.num_classes, in_chans=info.channels, image_size=info.image_size
        )
        return TrainConfig.model_validate(merged)
    except ValidationError as err:
        raise HvitError(format_validation_error(err, source=source)) from None


def validate_config(saved: Mapping[str, Any], *, source: str) -> TrainConfig:
    """Validate a complete config as saved (a checkpoint's), shape fields included."""
    try:
        return TrainConfig.model_validate(saved)
    except ValidationError as err:
        raise HvitError(format_validation_error(err, source=source)) from None


def format_validation_error(err: ValidationError, *, source: str) -> str:
    """``source: data.val_split: Input should be less than 1``; several problems joined by "; "."""
    prefix = "data." if err.title == "DataConfig" else ""
    parts: list[str] = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown setting; check the spelling (see --help)"
        parts.append(f"{prefix}{where}: {message}")
    shown = parts[:_MAX_PROBLEMS] + ([f"(+{len(parts) - _MAX_PROBLEMS} more)"] if len(parts) > _MAX_PROBLEMS else [])
    return f"{source}: " + "; ".join(shown)


def flatten_config(config: TrainConfig) -> dict[str, str | int | float | bool]:
    """Dotted-key scalars for MLflow params.

    Per-stage tuples are logged both joined (``model.embed_dims = 64-128-256``) and
    per stage (``model.embed_dims.0 = 64``) so that the MLflow UI can put each
    stage's number on a numeric axis in parallel-coordinates and scatter charts.
    """
    return dict(_flatten(config.model_dump(mode="json"), prefix=""))


def _flatten(node: Any, *, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, prefix=f"{prefix}{key}.")
    elif isinstance(node, list):
        yield prefix[:-1], "-".join(str(v) for v in node)
        for index, value in enumerate(node):
            yield f"{prefix}{index}", value
    else:
        yield prefix[:-1], "" if node is None else node


def has_field(path: str) -> bool:
    """Whether ``path`` (``"optim.lr"``) names a settable field of TrainConfig."""
    return _resolve_field(path) is not None and path.split(".")[-1] not in _DATA_SHAPED_FIELDS


def field_help(path: str) -> str:
    """The field's description plus its default, for CLI help without repeating it."""
    field = _resolve_field(path)
    if field is None:
        raise KeyError(path)
    default = field.default
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default)
    return f"{field.description} [default: {default}]"


def _resolve_field(path: str) -> Any:
    model: type[BaseModel] | None = TrainConfig
    field = None
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return field


def _expand_dotted(layer: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """``{"optim.lr": 1e-3}`` becomes ``{"optim": {"lr": 1e-3}}``; nested dicts recurse."""
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if isinstance(value, Mapping):
            value = _expand_dotted(value, source=source)
        node = out
        *parents, leaf = key.split(".")
        for parent in parents:
            child = node.setdefault(parent, {})
            if not isinstance(child, dict):
                raise HvitError(f"{source}: {key}: {parent} is a value, not a section")
            node = child
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            _deep_merge(node[leaf], value)
        else:
            node[leaf] = value
    return out


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
