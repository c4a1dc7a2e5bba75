"""Checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and JSON-like values, so the safe
unpickler can read it: the model's state dict, the full run config as JSON, the
metrics of its epoch, the class names, library versions and, for resuming, the
optimizer, schedule and scaler states.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvit_sweeps import __version__
from hvit_sweeps.config import TrainConfig, validate_config
from hvit_sweeps.errors import HvitError, checkpoint_file, first_line
from hvit_sweeps.model import HierarchicalViT, build_model

__all__ = ["Checkpoint", "load_checkpoint", "load_model", "save_checkpoint"]

FORMAT = "hvit-sweep/checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    config: TrainConfig
    model_state: dict[str, torch.Tensor]
    epoch: int
    metrics: dict[str, float]
    class_names: list[str]
    versions: dict[str, str]
    training_state: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    config: TrainConfig,
    epoch: int,
    metrics: dict[str, float],
    class_names: list[str],
    training_state: dict[str, Any] | None = None,
) -> None:
    """Write the checkpoint to a temporary file beside ``path``, then rename it.

    The rename is atomic on one filesystem, so a reader never sees half a file and
    a crash mid-write leaves the previous checkpoint intact.

    Args:
        training_state: Optimizer, scheduler and scaler state dicts for ``--resume``.
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.model_dump(mode="json"),
        "epoch": epoch,
        "metrics": dict(metrics),
        "class_names": list(class_names),
        "versions": {"hvit_sweeps": __version__, "torch": str(torch.__version__)},
        "training_state": training_state or {},
    }
    _write_atomically(Path(path), payload)


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is shared like its siblings
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        HvitError: The file is missing, corrupt, foreign (not written by hvit-sweep)
            or of a newer format.
    """
    path = checkpoint_file(Path(path))
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - untrusted bytes fail in many ways; all mean "unusable"
        raise HvitError(
            f"{path} is not a readable checkpoint ({first_line(err, limit=160)}): it is corrupt or not a safe "
            "torch file; re-export it with `hvit-sweep train` or `hvit-sweep best --export`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HvitError(
            f"{path} is not an hvit-sweep checkpoint (no '{FORMAT}' header): "
            "use a file written by `hvit-sweep train` or `hvit-sweep best --export`"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise HvitError(
            f"{path} has checkpoint format {payload['format_version']}, newer than this "
            f"hvit-sweep ({FORMAT_VERSION}): upgrade hvit-sweep"
        )
    missing = [key for key in ("config", "model_state", "epoch") if key not in payload]
    if missing:
        raise HvitError(f"{path} is an incomplete checkpoint (no {', '.join(missing)}): it was edited or cut short")
    return Checkpoint(
        path=path,
        config=validate_config(payload["config"], source=f"{path} (saved config)"),
        model_state=payload["model_state"],
        epoch=int(payload["epoch"]),
        metrics=payload.get("metrics", {}),
        class_names=list(payload.get("class_names", [])),
        versions=payload.get("versions", {}),
        training_state=payload.get("training_state", {}),
    )


def load_model(checkpoint: Checkpoint) -> HierarchicalViT:
    """Build the checkpoint's model and load its weights, strictly."""
    model = build_model(checkpoint.config.model)
    try:
        model.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as err:
        raise HvitError(
            f"{checkpoint.path}: weights do not match the saved model config ({first_line(err, limit=160)}): "
            "the file was edited or written by another model"
        ) from None
    return model
