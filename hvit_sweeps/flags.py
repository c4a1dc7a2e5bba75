"""Command-line flags derived from :class:`~hvit_sweeps.config.TrainConfig`.

The config tree is the only schema. Every settable field gets a flag named after
its last path part (``optim.lr`` -> ``--lr``), typed from its annotation, with its
description and default as help. The same table turns a config back into flags
(:func:`config_args`, the model card's "Reproduce" command) and checks
``--set PATH=VALUE`` keys. A new field gets all of that without another edit.

Flags default to None, meaning "not given", so only what the user typed
overrides the layer below it (defaults, a study file, a checkpoint's config).
Nothing here imports torch: ``--help`` stays fast.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from hvit_sweeps.config import DATA_SHAPED_PATHS, TrainConfig, has_field
from hvit_sweeps.errors import HvitError, checkpoint_file

__all__ = [
    "ConfigFlag",
    "config_args",
    "config_flag_table",
    "config_flags",
    "check_devices",
    "check_split",
    "check_study_name",
    "check_trials_per_gpu",
    "check_values",
    "config_layer",
    "keyword",
    "option_group",
    "override_args",
    "parse_sets",
    "reproduce_command",
    "set_args",
]

# Short names kept from the seed's CLI, beside the derived ones.
_ALIASES = {"data.mixup_alpha": "--mixup", "data.cutmix_alpha": "--cutmix", "model.drop_path_rate": "--drop-path"}
# --help groups the flags by config section.
_PANELS = {"model": "Model", "data": "Data", "optim": "Optimizer", "runtime": "Runtime"}
# Where a reproduced run writes its checkpoint; a temporary path from a sweep is no use.
_REPRODUCE_CHECKPOINT = "checkpoints/reproduced.pth"


@dataclass(frozen=True)
class ConfigFlag:
    """One config field as a command-line option."""

    path: str  # "optim.lr"
    param: str  # the Python parameter name: "lr"
    field: FieldInfo
    kind: Literal["bool", "stages", "choice", "value"]
    value_type: Any  # int, float, str, Path, or the Literal's choices

    @property
    def option(self) -> str:
        return "--" + self.param.replace("_", "-")

    def help(self) -> str:
        # Parentheses, not brackets: Rich would read "[default: x]" as markup and drop it.
        # A switch that defaults to None is decided by the device: say "auto".
        shown = "auto" if self.kind == "bool" and self.field.default is None else _show(self.field.default)
        return f"{self.field.description} (default: {shown})"

    def annotation(self) -> Any:
        """The ``Annotated[...]`` that Typer reads; None as default means "not given"."""
        names = [self.option] + ([_ALIASES[self.path]] if self.path in _ALIASES else [])
        if self.kind == "bool":
            names = [f"{self.option}/--no-{self.option[2:]}"]
        option = typer.Option(
            *names,
            help=self.help(),
            show_default=False,
            callback=self._parse,
            metavar=self._metavar(),
            rich_help_panel=_PANELS.get(self.path.split(".")[0], "Training"),
        )
        base = bool if self.kind == "bool" else str if self.kind in ("stages", "choice") else self.value_type
        return Annotated[base | None, option]

    def _metavar(self) -> str | None:
        if self.kind == "stages":
            return "N,N,..."
        if self.kind == "choice":
            return "|".join(map(str, self.value_type))
        return None

    def _parse(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "stages":
            return _int_tuple(value, self.option)
        if self.kind == "choice" and value not in self.value_type:
            raise typer.BadParameter(f"{value!r}: choose one of {', '.join(map(str, self.value_type))}")
        return value

    def to_args(self, value: Any) -> list[str]:
        """The flag that sets ``value`` (a JSON-mode value, as ``model_dump`` gives)."""
        if self.kind == "bool":
            return [self.option if value else f"--no-{self.option[2:]}"]
        if self.kind == "stages":
            return [self.option, ",".join(str(v) for v in value)]
        return [self.option, str(value)]


@functools.cache
def config_flag_table() -> dict[str, ConfigFlag]:
    """Every settable field of TrainConfig, keyed by its parameter name."""
    table: dict[str, ConfigFlag] = {}
    for path, field in _walk_fields(TrainConfig, prefix=""):
        flag = _make_flag(path, field)
        if flag.param in table:  # two sections with one leaf name: qualify the later one
            flag = _make_flag(path, field, param=path.replace(".", "_"))
        table[flag.param] = flag
    return table


def _walk_fields(model: type[BaseModel], *, prefix: str) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _walk_fields(field.annotation, prefix=f"{path}.")
        elif path not in DATA_SHAPED_PATHS:
            yield path, field


def _make_flag(path: str, field: FieldInfo, *, param: str | None = None) -> ConfigFlag:
    kind, value_type = _classify(field.annotation)
    return ConfigFlag(path=path, param=param or path.rsplit(".", 1)[-1], field=field, kind=kind, value_type=value_type)


def _classify(annotation: Any) -> tuple[Literal["bool", "stages", "choice", "value"], Any]:
    """The flag kind for a field's type; ``X | None`` is treated as ``X``."""
    members = [a for a in _union_members(annotation) if a is not type(None)]
    inner = members[0]
    origin = typing.get_origin(inner)
    if inner is bool:
        return "bool", bool
    if origin is Literal:
        return "choice", typing.get_args(inner)
    if origin is Annotated:
        return _classify(typing.get_args(inner)[0])
    if origin is tuple:
        return "stages", int
    return "value", inner


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _show(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default)
    return "none" if default is None else str(default)


def _int_tuple(value: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a comma-separated list of integers, e.g. 64,128,256", param_hint=option
        ) from None


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def keyword(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """One option of an :func:`option_group`: a keyword parameter as Typer reads it."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def option_group(name: str, params: list[inspect.Parameter], collect: Callable[..., Any]) -> Decorator:
    """Give a Typer command the options ``params``, passed to it as one value.

    The command declares a keyword parameter ``name``; it receives
    ``collect(**the values of params)``. Commands that share a group of options
    declare it once, and the command's body reads one typed value, not a dozen flags.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True).parameters
        kept = [p for key, p in own.items() if key != name]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            group = collect(**{p.name: values.pop(p.name) for p in params})
            return command(**values, **{name: group})

        # Typer reads the signature: the command's own options first, then the group's.
        wrapper.__signature__ = inspect.Signature([*kept, *params])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in [*kept, *params]}
        return wrapper

    return decorate


def config_flags(*, only: Iterable[str] | None = None) -> Decorator:
    """Give a Typer command one flag per config field (or the ``only`` paths).

    The command declares a parameter ``config_layer: dict[str, Any]``; it receives
    the flags the user gave, keyed by config path.
    """
    wanted = set(only) if only is not None else None
    flags = [f for f in config_flag_table().values() if wanted is None or f.path in wanted]
    params = [
        inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=f.annotation())
        for f in flags
    ]
    return option_group("config_layer", params, lambda **values: config_layer(values))


def config_layer(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flag values by parameter name -> the given ones, keyed by config path."""
    table = config_flag_table()
    return {table[name].path: value for name, value in values.items() if value is not None}


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """``PATH=VALUE`` pairs; values are read as TOML (true, 3, 1e-3, [64, 128]) or else kept as text.

    A per-stage list also takes the flag's form, ``64,128,256``, so the two never disagree.
    """
    flags = {flag.path: flag for flag in config_flag_table().values()}
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise typer.BadParameter(f"{item!r}: use PATH=VALUE, e.g. optim.lr=1e-3", param_hint="--set")
        if not has_field(key):
            raise typer.BadParameter(f"{key!r} is not a config path{_nearest(key, flags)}", param_hint="--set")
        try:
            parsed[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            stages = key in flags and flags[key].kind == "stages"
            parsed[key] = _int_tuple(raw.strip(), f"--set {key}") if stages else raw
    return parsed


def check_values(layer: Mapping[str, Any], *, source: str) -> None:
    """Each value against its own field's type and bounds, before the layers it will go over are known.

    For a command whose config comes later (a trial's, read from the study), so that a
    bad value is one line before anything loads; checks across fields wait for the config.
    """
    fields = {flag.path: flag.field for flag in config_flag_table().values()}
    for path, value in layer.items():
        field = fields.get(path)
        if field is None:  # a path without a flag (e.g. data.image_size): the config checks it
            continue
        kind: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        try:
            TypeAdapter(kind).validate_python(value)
        except ValidationError as err:
            raise HvitError(f"{source}: {path}: {err.errors()[0]['msg']}") from None


def _nearest(path: str, flags: Mapping[str, ConfigFlag]) -> str:
    """``: did you mean optim.lr?`` for the closest settable path, or a pointer to the list."""
    close = difflib.get_close_matches(path, list(flags), n=1, cutoff=0.5)
    leaf = [p for p in flags if p.rsplit(".", 1)[-1] == path.rsplit(".", 1)[-1]]
    guess = leaf or close  # the same field name in another section is the likelier slip
    if guess:
        return f": did you mean {guess[0]}?"
    return " (`hvit-sweep train --help` lists every field; --set takes SECTION.FIELD, e.g. optim.lr)"


def set_args(layer: Mapping[str, Any]) -> list[str]:
    """``--set PATH=VALUE`` flags that :func:`parse_sets` reads back as ``layer``."""
    return [arg for path, value in layer.items() for arg in ("--set", f"{path}={_toml_value(value)}")]


def override_args(layer: Mapping[str, Any], *, flag_paths: Iterable[str]) -> list[str]:
    """Flags for ``layer``: its own flag where the command has one (``--dataset x``), else ``--set``."""
    by_path = {flag.path: flag for flag in config_flag_table().values() if flag.path in set(flag_paths)}
    args: list[str] = []
    for path, value in layer.items():
        flag = by_path.get(path)
        args += flag.to_args(_json_value(value)) if flag else set_args({path: value})
    return args


def _json_value(value: Any) -> Any:
    """A layer value as ``model_dump(mode="json")`` would give it: tuples as lists, paths as text."""
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def config_args(config: TrainConfig) -> list[str]:
    """The flags that rebuild ``config`` from the defaults: each field that differs."""
    ours, defaults = config.model_dump(mode="json"), TrainConfig().model_dump(mode="json")
    args: list[str] = []
    for flag in config_flag_table().values():
        value = _lookup(ours, flag.path)
        if value != _lookup(defaults, flag.path) and value is not None:
            args += flag.to_args(value)
    return args


def reproduce_command(config: TrainConfig) -> str:
    """A ``hvit-sweep train`` command line for ``config``, writing its own checkpoint."""
    rebuilt = config.model_copy(update={"checkpoint_path": Path(_REPRODUCE_CHECKPOINT)})
    return " ".join(shlex.quote(p) for p in ["hvit-sweep", "train", *config_args(rebuilt)])


def _lookup(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        node = node[part]
    return node


# Checks of option values that no type expresses, run as Typer callbacks: a mistake is one
# line while parsing, before a command imports torch or MLflow.


def check_study_name(value: str | None) -> str | None:
    """Names go into URLs, log folders and database rows: letters, digits, '.', '_' and '-' only."""
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
        raise typer.BadParameter(f"{value!r}: use letters, digits, '.', '_' and '-' (no spaces or slashes)")
    return value


def check_checkpoint(value: Path | None) -> Path | None:
    """A checkpoint path that is not a file is answered here, before torch loads (seconds)."""
    if value is None:
        return None
    try:
        return checkpoint_file(value)
    except HvitError as err:
        raise typer.BadParameter(str(err)) from None


def check_split(value: str) -> str:
    if value not in ("val", "test", "both"):
        raise typer.BadParameter(f"{value!r}: use val, test or both")
    return value


def check_trials_per_gpu(value: str) -> str:
    if value != "auto" and (not value.isdigit() or int(value) < 1):
        raise typer.BadParameter(f"{value!r}: a positive number, or auto")
    return value


def check_devices(value: str | None) -> str | None:
    """CUDA device indices, as CUDA_VISIBLE_DEVICES and the packing's memory probe take them."""
    if value is not None and not re.fullmatch(r"\d+(,\d+)*", value):
        raise typer.BadParameter(f"{value!r}: CUDA device indices, comma-separated, e.g. 0,1,2,3")
    return value
