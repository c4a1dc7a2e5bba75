"""Evaluation: loss, top-1 and top-5 of a model over a loader, and of a saved checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hvit_sweeps import interrupt
from hvit_sweeps.checkpoint import Checkpoint, load_model
from hvit_sweeps.config import build_config
from hvit_sweeps.data import BatchLoader, DatasetSplits, load_dataset, make_loaders
from hvit_sweeps.errors import HvitError
from hvit_sweeps.runtime import Precision, resolve_device

__all__ = ["evaluate", "evaluate_checkpoint", "prefixed"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    precision: Precision,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy over every sample of ``loader``."""
    was_training = model.training
    model.eval()
    totals: torch.Tensor | None = None
    count = 0  # sample counts are known on the host; only sums of results live on the device
    for x, y in loader:
        with precision.autocast():
            logits = model(x.contiguous(memory_format=memory_format)).float()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(y[:, None])
        batch = torch.stack(
            [F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum().float(), hits.any(dim=1).sum().float()]
        )
        totals = batch if totals is None else totals + batch
        count += len(y)
        interrupt.check()
    model.train(was_training)
    if totals is None:
        raise HvitError("the evaluation split is empty: lower --val-split's effect or add data")
    loss, top1, top5 = totals.tolist()  # the one host sync of evaluation
    return {"loss": loss / count, "acc1": top1 / count, "acc5": top5 / count}


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` named for their split: ``loss`` on val becomes ``val_loss``."""
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def evaluate_checkpoint(
    checkpoint: Checkpoint,
    *,
    overrides: dict[str, Any] | None = None,
    splits: Sequence[str] = ("val", "test"),
) -> tuple[dict[str, dict[str, float]], DatasetSplits]:
    """Re-create a checkpoint's data split and evaluate its weights on ``splits``.

    The validation split is rebuilt from the saved seed and ``val_split``, so the
    val metrics reproduce the ones recorded when the checkpoint was chosen.

    Args:
        overrides: Config paths to change first, such as ``data.data_dir`` or ``runtime.device``.
    """
    config = build_config(
        checkpoint.config.model_dump(mode="json"), overrides or {}, source=f"eval of {checkpoint.path}"
    )
    if config.model != checkpoint.config.model:
        raise HvitError(f"{checkpoint.path}: the dataset given now does not fit the saved model")
    device = resolve_device(config.runtime.device)
    data = load_dataset(config.data, seed=config.seed)
    loaders = make_loaders(data, config.data, device=device, seed=config.seed)
    model = load_model(checkpoint).to(device)
    precision = Precision.from_runtime(config.runtime, device)
    results = {name: evaluate(model, getattr(loaders, name), precision) for name in splits}
    return results, data
