"""Model cards: what an exported model is, how its figures were obtained, and how to check and repeat them.

Two cards: a trial's (``best --export``: the search's checkpoint, scored on val) and
a final model's (``best --retrain``: the winner trained again on train plus val and
tested once). The final model's facts (:class:`RetrainResult`) live here with its
card and its ``metrics.json`` summary, so that :mod:`hvit_sweeps.retrain` does the
training and this module only writes it down.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvit_sweeps.config import TrainConfig, flatten_config
from hvit_sweeps.flags import reproduce_command
from hvit_sweeps.keys import ROLE_FINAL

if TYPE_CHECKING:  # torch: the card reads a loaded checkpoint, it never loads one
    from hvit_sweeps.checkpoint import Checkpoint

__all__ = [
    "FINAL_CHECKPOINT",
    "TRAINED_ON",
    "RegisteredVersion",
    "RetrainResult",
    "bash_block",
    "final_model_card",
    "final_summary",
    "trial_model_card",
]

# Names the final model is written under; candidates for hvit_sweeps.keys once a second reader appears.
TRAINED_ON = "train+val"
FINAL_CHECKPOINT = "final.pth"  # the local file's name is the artifact's name: checkpoint/final.pth


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version in MLflow's registry, and the alias pointing at it."""

    name: str
    version: str
    alias: str
    source: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


@dataclass(frozen=True)
class RetrainResult:
    """What :func:`retrain_best` did and reached."""

    study_name: str
    source_trial: int
    source_run_id: str
    source_value: float
    run_id: str
    config: TrainConfig
    test_metrics: dict[str, float]
    history: list[dict[str, float]]
    dataset_sizes: dict[str, int]
    seconds: float
    registered: RegisteredVersion | None
    exported: Path | None

    @property
    def test_acc1(self) -> float:
        return self.test_metrics["test_acc1"]


# -- a final model (best --retrain) ------------------------------------------------------


def final_summary(result: RetrainResult) -> dict[str, Any]:
    """The facts of a final model, as metrics.json and a benchmark summary record them."""
    registered = result.registered
    return {
        "study": result.study_name,
        "source_trial": result.source_trial,
        "source_run_id": result.source_run_id,
        "source_val_value": result.source_value,
        "mlflow_run_id": result.run_id,
        "trained_on": TRAINED_ON,
        "epochs": result.config.epochs,
        "seed": result.config.seed,
        "dataset": result.config.data.dataset,
        "dataset_sizes": result.dataset_sizes,
        "test": result.test_metrics,
        "seconds": round(result.seconds, 1),
        "registered": None
        if registered is None
        else {"name": registered.name, "version": registered.version, "alias": registered.alias, "uri": registered.uri},
        "recipe": _recipe(result.config),
    }


# The settings a study of this project searches (recipe and shape), as a final model's summary lists them.
_RECIPE_PREFIXES = ("optim.", "data.augment", "data.mixup_alpha", "data.cutmix_alpha", "data.batch_size")
_SHAPE_KEYS = (
    "model.embed_dims",
    "model.depths",
    "model.num_heads",
    "model.patch_size",
    "model.mlp_ratio",
    "model.drop_path_rate",
    "model.dropout",
)


def _recipe(config: TrainConfig) -> dict[str, Any]:
    flat = flatten_config(config)
    return {k: v for k, v in flat.items() if k.startswith(_RECIPE_PREFIXES) or k in _SHAPE_KEYS}


def final_model_card(result: RetrainResult) -> str:
    """MODEL_CARD.md: the final test figure first, then how it was obtained, how to check and repeat it."""
    config, test = result.config, result.test_metrics
    headline = (
        f"**Test top-1 {test['test_acc1']:.4f}** (top-5 {test['test_acc5']:.4f}, loss {test['test_loss']:.4f}) "
        f"on {result.dataset_sizes['test']} test images of {config.data.dataset}, evaluated once, after training."
    )
    evaluate = (
        f"hvit-sweep eval --checkpoint {FINAL_CHECKPOINT} --split test "
        f"--data-dir {shlex.quote(str(config.data.data_dir))}"
    )
    retrain = f"hvit-sweep best --study {shlex.quote(result.study_name)} --retrain --seed {config.seed}"
    lines = [
        f"# HViT: final model of study `{result.study_name}`",
        "",
        headline,
        "",
        "## How it was obtained",
        "",
        *_provenance(result),
        "",
        *_settings_table(config),
        "",
        "## Evaluate",
        "",
        *bash_block(evaluate),
        "Only `test` is held out: this config's val split is part of what the final model trained on.",
        "",
        "## Reproduce",
        "",
        *bash_block(retrain),
        "The same config trained on train alone (val held out, best epoch kept):",
        "",
        *bash_block(reproduce_command(config)),
    ]
    return "\n".join(lines)


def _provenance(result: RetrainResult) -> list[str]:
    config, registered = result.config, result.registered
    where = f"MLflow run `{result.run_id}` (role `{ROLE_FINAL}`, a child of the study's run)"
    if registered is not None:
        where += f", registered as `{registered.name}` version {registered.version} (`{registered.uri}`)"
    return [
        (
            f"- The search chose trial {result.source_trial} (MLflow run `{result.source_run_id}`) by val top-1 alone "
            f"({result.source_value:.4f}); it never saw the test split."
        ),
        (
            f"- Its config was trained once more on train plus val ({result.dataset_sizes['train']} images) for "
            f"{config.epochs} epochs with seed {config.seed}, keeping the last epoch's weights: no unseen val set "
            "was left to pick an epoch by."
        ),
        f"- {where}.",
    ]


def _settings_table(config: TrainConfig) -> list[str]:
    model = config.model
    shape = (
        f"{len(model.depths)} stages: dims {_join(model.embed_dims)}, depths {_join(model.depths)}, "
        f"heads {_join(model.num_heads)}, patch {model.patch_size}"
    )
    rest = [f"| {k} | {v} |" for k, v in _recipe(config).items() if k not in _SHAPE_KEYS[:4]]
    return ["| | |", "|---|---|", f"| architecture | {shape} |", *rest]


def _join(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


# -- a trial (best --export) -------------------------------------------------------------


def trial_model_card(summary: dict[str, Any], checkpoint: Checkpoint) -> str:
    """MODEL_CARD.md of an exported trial: its shape and val figures, how to evaluate and reproduce it."""
    config = checkpoint.config
    model = config.model
    metrics = checkpoint.metrics
    params_m = summary["params_m"]
    lines = [
        f"# HViT from study `{summary['study']}`, trial {summary['trial']}",
        "",
        f"A hierarchical Vision Transformer (PiT-lite): strided-conv patch stem, {_stages_phrase(len(model.depths))}.",
        "",
        "| | |",
        "|---|---|",
        f"| dataset | {config.data.dataset} ({model.num_classes} classes, {model.in_chans}x{model.image_size}x{model.image_size}) |",
        f"| embed dims / depths / heads | {_join(model.embed_dims)} / {_join(model.depths)} / {_join(model.num_heads)} |",
        f"| patch size | {model.patch_size} |",
        f"| parameters | {params_m:.3f} M |",
        f"| best epoch | {checkpoint.epoch} of {config.epochs} |",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items() if k.startswith("val_")],
        f"| MLflow run | `{summary['mlflow_run_id']}` |",
        "",
        "## Evaluate",
        "",
        *bash_block(f"hvit-sweep eval --checkpoint best.pth --data-dir {shlex.quote(str(config.data.data_dir))}"),
        "The validation split is rebuilt from the saved seed, so `val` reproduces the metrics above.",
        "",
        "## Reproduce",
        "",
        *bash_block(reproduce_command(config)),
    ]
    return "\n".join(lines)


def bash_block(command: str) -> list[str]:
    """A Markdown code block holding one shell command, then a blank line."""
    return ["```bash", command, "```", ""]


def _stages_phrase(stages: int) -> str:
    if stages == 1:
        return "one stage of pre-norm transformer blocks (no pooling)"
    return f"{stages} stages of pre-norm transformer blocks with depthwise-conv pooling between them"
