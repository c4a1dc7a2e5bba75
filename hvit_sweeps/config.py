"""One config tree for a training run.

A :class:`TrainConfig` is built in exactly one place, :func:`build_config`, from
layers of plain dicts: defaults, then a study's fixed settings or a checkpoint's
saved config, then trial parameters or CLI flags. Layers use nested dicts or
dotted keys (``"optim.lr"``); later layers win. The dataset decides the model's
input shape and class count, so those three fields are filled from it here and
are never set by hand. The result is validated once and logged flattened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# Torch-free, so --help stays fast; DataConfig is re-exported as the config's data section.
from hvit_sweeps.data.settings import DataConfig
from hvit_sweeps.errors import HvitError
from hvit_sweeps.metrics import Monitor, better

if TYPE_CHECKING:
    from hvit_sweeps.data.info import DatasetInfo

__all__ = [
    "DATA_SHAPED_PATHS",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "TrainConfig",
    "build_config",
    "flatten_config",
    "format_validation_error",
    "has_field",
    "max_stages",
    "validate_config",
]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# Fields of ModelConfig that the dataset decides; a user never sets them.
_DATA_SHAPED_FIELDS = ("num_classes", "in_chans", "image_size")
_STAGE_FIELDS = ("embed_dims", "depths", "num_heads")
DATA_SHAPED_PATHS = frozenset(f"model.{name}" for name in _DATA_SHAPED_FIELDS)
# A union-typed value fails once per member; the first few problems say enough.
_MAX_PROBLEMS = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_PositiveInt = Annotated[int, Field(gt=0)]
_Stages = Annotated[tuple[_PositiveInt, ...], Field(min_length=1)]


def max_stages(image_size: int, patch_size: int) -> int:
    """Most stages a token grid supports.

    The stem gives a ``G x G`` grid with ``G = image_size // patch_size``. Each
    pooling (3x3, stride 2, padding 1) maps ``g`` to ``ceil(g / 2)`` and needs
    ``g >= 2``, so the grid allows one stage plus one per possible halving.

    Args:
        image_size: Side of the square input image in pixels.
        patch_size: Side of a square patch in pixels.

    Returns:
        The number of stages, or 0 when the patch is larger than the image.
    """
    grid = image_size // patch_size
    if grid < 1:
        return 0
    # ceil(log2(g)) halvings take g down to 1.
    return 1 + math.ceil(math.log2(grid))


def _min_grid(num_stages: int) -> int:
    """Smallest token grid side that supports ``num_stages`` stages."""
    if num_stages <= 1:
        return 1
    return 2 ** (num_stages - 2) + 1


class ModelConfig(_Strict):
    """Architecture of a :class:`HierarchicalViT`, validated as a whole.

    The per-stage tuples follow PiT: entry ``i`` of ``embed_dims``, ``depths``
    and ``num_heads`` describes stage ``i``.
    """

    embed_dims: _Stages = Field((64, 128, 256), description="Channel width of each stage.")
    depths: _Stages = Field((2, 2, 2), description="Number of transformer blocks in each stage.")
    num_heads: _Stages = Field((2, 4, 8), description="Attention heads in each stage.")
    patch_size: _PositiveInt = Field(4, description="Side of a square patch in pixels.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width as a multiple of the stage width.")
    drop_path_rate: float = Field(
        0.1, ge=0, lt=1, description="Stochastic depth rate of the last block; rises linearly from 0."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the MLP, attention output and position embedding.")
    num_classes: _PositiveInt = Field(100, description="Number of output classes.")
    in_chans: _PositiveInt = Field(3, description="Channels of the input image.")
    image_size: _PositiveInt = Field(32, description="Side of the square input image in pixels.")

    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self.embed_dims)

    @property
    def total_depth(self) -> int:
        """Number of transformer blocks over all stages."""
        return sum(self.depths)

    @property
    def grid_size(self) -> int:
        """Side of the token grid after the patch stem."""
        return self.image_size // self.patch_size

    @model_validator(mode="after")
    def _check_architecture(self) -> ModelConfig:
        # Checked in order, so each message can rely on the rules before it.
        _check_stage_lengths(self)
        _check_head_split(self)
        _check_patch_grid(self)
        return self


def _check_stage_lengths(config: ModelConfig) -> None:
    lengths = (len(config.embed_dims), len(config.depths), len(config.num_heads))
    if len(set(lengths)) > 1:
        raise ValueError("embed_dims, depths and num_heads need one entry per stage; got {}, {}, {}".format(*lengths))


def _check_head_split(config: ModelConfig) -> None:
    for stage, (dim, heads) in enumerate(zip(config.embed_dims, config.num_heads, strict=False)):
        if dim % heads:
            raise ValueError(f"stage {stage}: embed_dims {dim} is not divisible by num_heads {heads}")


def _check_patch_grid(config: ModelConfig) -> None:
    if config.image_size % config.patch_size:
        raise ValueError(f"image_size {config.image_size} is not divisible by patch_size {config.patch_size}")
    if config.num_stages > max_stages(config.image_size, config.patch_size):
        need, grid = _min_grid(config.num_stages), config.grid_size
        raise ValueError(
            f"{config.num_stages} stages need a token grid of at least {need}x{need}, but "
            f"image_size {config.image_size} / patch_size {config.patch_size} gives {grid}x{grid}: "
            "use fewer stages or a smaller patch_size"
        )


class OptimConfig(_Strict):
    """AdamW with linear warm-up then cosine decay, in decoupled form."""

    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW decoupled weight decay.")
    beta1: float = Field(0.9, gt=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.999, gt=0, lt=1, description="AdamW beta2.")
    warmup_epochs: float = Field(1.0, ge=0, description="Epochs of linear warm-up.")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="Cosine floor as a fraction of the peak lr.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing.")
    grad_clip: float = Field(1.0, ge=0, description="Max global gradient norm; 0 disables clipping.")


class RuntimeConfig(_Strict):
    """Where and how the step runs; none of it changes the maths beyond precision."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    amp: bool | None = Field(
        None, description="Mixed precision (autocast); auto: on for CUDA, off elsewhere (CPU autocast is often slower)."
    )
    autocast_dtype: Literal["bf16", "fp16"] = Field("bf16", description="Autocast dtype; fp16 adds a gradient scaler.")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="torch.compile mode, or off."
    )
    cuda_graphs: bool | None = Field(
        None, description="Capture the whole train step in a CUDA graph; auto: on for CUDA where the step allows it."
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
    monitor: Monitor = Field("val_acc1", description="Validation metric that picks the best epoch.")
    checkpoint_path: Path | None = Field(None, description="Where to save the best-by-validation checkpoint.")
    save_final: bool = Field(False, description="Also keep the last epoch's checkpoint (<name>_last.pth).")
    evaluate_test: bool = Field(False, description="Evaluate the best weights on the test set at the end.")

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return better(self.monitor)

    @property
    def last_checkpoint_path(self) -> Path | None:
        if self.checkpoint_path is None:
            return None
        path = self.checkpoint_path
        return path.with_name(f"{path.stem}_last{path.suffix or '.pth'}")


def build_config(*layers: Mapping[str, Any], source: str = "config", info: DatasetInfo | None = None) -> TrainConfig:
    """Merge layers over the defaults, fill the dataset's shape in, validate once.

    Args:
        layers: Dicts of overrides, nested or with dotted keys; later ones win.
        source: Names where the values came from, for error messages.
        info: The dataset's facts, when the caller has them already. Otherwise they
            are looked up once per process (a ``folder:`` dataset is scanned once).

    Raises:
        HvitError: One line per bad field, each naming the field and the problem.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        _deep_merge(merged, _expand_dotted(layer, source=source))
    for name in _DATA_SHAPED_FIELDS:
        merged.get("model", {}).pop(name, None)
    try:
        if info is None:
            from hvit_sweeps.data.describe import describe_dataset  # cached; only a folder: scan imports torch

            info = describe_dataset(DataConfig.model_validate(merged.get("data", {})))
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


def flatten_config(config: TrainConfig, *, stages: int = 0) -> dict[str, str | int | float | bool]:
    """Dotted-key scalars for MLflow params, the same key set for every trial of a study.

    Per-stage tuples are logged joined by commas (``model.embed_dims = 64,128,256``)
    and per stage (``model.embed_dims.0 = 64``), so that the MLflow UI can put each
    stage's number on a numeric axis in parallel-coordinates and scatter charts.
    Stages up to ``stages`` that the model does not have are logged as 0, so a
    2-stage trial sits at depth 0 beside 4-stage ones instead of being dropped.
    ``checkpoint_path`` is left out: it is a machine-local file, not a setting.
    """
    tree = config.model_dump(mode="json", exclude={"checkpoint_path"})
    flat = dict(_flatten(tree, prefix=""))
    for name in _STAGE_FIELDS:
        for index in range(config.model.num_stages, stages):
            flat[f"model.{name}.{index}"] = 0
    return flat


def _flatten(node: Any, *, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, prefix=f"{prefix}{key}.")
    elif isinstance(node, list):
        yield prefix[:-1], ",".join(str(v) for v in node)
        for index, value in enumerate(node):
            yield f"{prefix}{index}", value
    else:
        yield prefix[:-1], "" if node is None else node


def has_field(path: str) -> bool:
    """Whether ``path`` (``"optim.lr"``) names a settable field of TrainConfig.

    The whole path counts: ``data.image_size`` is settable, ``model.image_size`` is not.
    """
    return _resolve_field(path) is not None and path not in DATA_SHAPED_PATHS


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
