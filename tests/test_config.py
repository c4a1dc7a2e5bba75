from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hvit_sweeps.config import (
    build_config,
    flatten_config,
    has_field,
    validate_config,
)
from hvit_sweeps.errors import HvitError


# Dotted and nested layers merge over the defaults; a later layer wins per leaf.
def test_layers_merge_dotted_and_nested_later_wins() -> None:
    config = build_config(
        {"optim": {"lr": 1e-2, "weight_decay": 0.2}, "epochs": 3},
        {"optim.lr": 3e-3, "model.depths": [1, 1, 1]},
        {"model": {"num_heads": [1, 2, 4]}, "epochs": 5},
    )
    assert config.optim.lr == 3e-3
    assert config.optim.weight_decay == 0.2  # an earlier sibling survives a later dotted key
    assert config.model.depths == (1, 1, 1) and config.model.num_heads == (1, 2, 4)
    assert config.epochs == 5
    assert config.optim.beta2 == 0.999  # untouched defaults stay


# A dotted key and a nested dict in the same layer land in the same section.
def test_dotted_and_nested_in_one_layer_combine() -> None:
    config = build_config({"optim.lr": 2e-3, "optim": {"beta1": 0.8}})
    assert (config.optim.lr, config.optim.beta1) == (2e-3, 0.8)


# The dataset decides the model's input shape and class count, over any user value.
def test_dataset_fills_model_shape_and_overrides_user_num_classes() -> None:
    config = build_config({"data.dataset": "fashion-mnist", "model.num_classes": 7, "model.image_size": 64})
    assert (config.model.in_chans, config.model.image_size, config.model.num_classes) == (1, 28, 10)
    assert build_config({"data.dataset": "synthetic"}).model.num_classes == 100


# Each invalid value fails as one HvitError that names its source and dotted field.
@pytest.mark.parametrize(
    ("layer", "field"),
    [
        pytest.param({"optim.lrr": 1e-3}, "optim.lrr", id="unknown-key"),
        pytest.param({"data.val_split": 1.5}, "data.val_split", id="val-split"),
        pytest.param({"runtime.device": "tpu"}, "runtime.device", id="device"),
        pytest.param({"epochs": 0}, "epochs", id="epochs"),
        pytest.param({"data.dataset": "nope"}, "data.dataset", id="dataset"),
    ],
)
def test_errors_name_source_and_field(layer: dict[str, Any], field: str) -> None:
    with pytest.raises(HvitError) as err:
        build_config(layer, source="my flags")
    message = str(err.value)
    assert message.startswith(f"my flags: {field}: ")
    assert "\n" not in message


# An unknown key is reported as a spelling problem, not pydantic's jargon.
def test_unknown_key_says_check_the_spelling() -> None:
    with pytest.raises(HvitError, match=r"optim\.lrr: unknown setting; check the spelling"):
        build_config({"optim.lrr": 1e-3})


# Cross-field model problems name the model section and the offending field.
def test_model_dims_not_divisible_by_heads_names_the_model() -> None:
    layer = {"model.embed_dims": [30, 64], "model.depths": [1, 1], "model.num_heads": [4, 4]}
    with pytest.raises(HvitError) as err:
        build_config(layer, source="flags")
    assert str(err.value).startswith("flags: model: ")
    assert "embed_dims 30 is not divisible by num_heads 4" in str(err.value)


# A dotted key cannot descend into a value that is already a scalar.
def test_dotted_key_through_a_value_is_an_error() -> None:
    with pytest.raises(HvitError, match=r"^cfg: optim\.lr\.x: lr is a value, not a section$"):
        build_config({"optim.lr": 1e-3, "optim.lr.x": 2}, source="cfg")


# Several bad fields are reported together in one message.
def test_several_problems_in_one_message() -> None:
    with pytest.raises(HvitError) as err:
        build_config({"optim.lr": -1, "optim.beta1": 2.0})
    assert "optim.lr" in str(err.value) and "optim.beta1" in str(err.value)


# A saved config (shape fields included) validates as is; a bad one names the field.
def test_validate_config_round_trips_a_dump() -> None:
    config = build_config({"data.dataset": "fashion-mnist", "optim.lr": 5e-4})
    assert validate_config(config.model_dump(mode="json"), source="ckpt") == config
    with pytest.raises(HvitError, match=r"^ckpt: epochs: "):
        validate_config({**config.model_dump(mode="json"), "epochs": -1}, source="ckpt")


# Flattened params are scalars only, with per-stage keys and a joined value.
def test_flatten_config_scalars_per_stage_and_joined() -> None:
    flat = flatten_config(build_config({}))
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())
    assert flat["model.embed_dims"] == "64,128,256"  # commas: "64-128" read like a range
    assert (flat["model.embed_dims.0"], flat["model.embed_dims.2"]) == (64, 256)
    assert flat["model.depths"] == "2,2,2" and flat["model.num_heads.1"] == 4
    assert flat["optim.lr"] == 1e-3 and flat["data.dataset"] == "cifar100"
    assert flat["runtime.amp"] == ""  # None ("auto") is logged as an empty string
    assert "checkpoint_path" not in flatten_config(build_config({"checkpoint_path": "/tmp/x.pth"}))


# Stages a smaller model lacks are logged as 0, so every trial of a study has the same keys.
def test_flatten_config_pads_absent_stages() -> None:
    two = flatten_config(
        build_config({"model.embed_dims": [16, 32], "model.depths": [1, 2], "model.num_heads": [2, 2]}), stages=4
    )
    four = flatten_config(
        build_config(
            {"model.patch_size": 2, "model.embed_dims": [16] * 4, "model.depths": [1] * 4, "model.num_heads": [2] * 4}
        ),
        stages=4,
    )
    assert set(two) == set(four)
    assert (two["model.depths.1"], two["model.depths.2"], two["model.embed_dims.3"]) == (2, 0, 0)


# Only settable paths are fields; the dataset-decided shape fields are not.
def test_has_field() -> None:
    assert has_field("optim.lr") and has_field("data.max_train_samples") and has_field("epochs")
    assert not has_field("optim.lrr") and not has_field("optim.lr.x")
    assert not has_field("model.num_classes") and not has_field("model.image_size")
    assert has_field("data.image_size")  # the whole path counts, not its last part


# The last-epoch checkpoint sits beside the best one with a _last suffix.
def test_last_checkpoint_path_and_monitor_mode() -> None:
    config = build_config({"checkpoint_path": "runs/best.pth", "monitor": "val_loss"})
    assert config.last_checkpoint_path == Path("runs/best_last.pth")
    assert config.monitor_mode == "min"
    assert build_config({}).last_checkpoint_path is None
    assert build_config({}).monitor_mode == "max"


# The built config is frozen: it cannot drift after validation.
def test_config_is_frozen() -> None:
    config = build_config({})
    with pytest.raises(ValidationError, match="frozen"):
        config.epochs = 3  # type: ignore[misc]
