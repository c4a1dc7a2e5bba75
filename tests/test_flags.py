"""The config schema is the only source of flags, --set keys and reproduce commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main

from hvit_sweeps.cli import app
from hvit_sweeps.config import DATA_SHAPED_PATHS, TrainConfig, build_config, has_field
from hvit_sweeps.flags import config_args, config_flag_table, config_layer, parse_sets, reproduce_command, set_args

# Values unlike every default, for a config that exercises every flag.
NON_DEFAULT: dict[str, Any] = {
    "model.embed_dims": [24, 48], "model.depths": [1, 3], "model.num_heads": [2, 4], "model.patch_size": 2,
    "model.mlp_ratio": 3.0, "model.drop_path_rate": 0.2, "model.dropout": 0.05,
    "data.dataset": "folder:/tmp/images", "data.data_dir": "elsewhere", "data.download": False,
    "data.val_split": 0.2, "data.batch_size": 32, "data.num_workers": 0, "data.loader": "cpu",
    "data.augment": "randaugment", "data.mixup_alpha": 0.2, "data.cutmix_alpha": 1.0, "data.image_size": 16,
    "data.max_train_samples": 100, "data.max_eval_samples": 50,
    "optim.lr": 0.003, "optim.weight_decay": 0.01, "optim.beta1": 0.8, "optim.beta2": 0.98,
    "optim.warmup_epochs": 2.5, "optim.min_lr_ratio": 0.05, "optim.label_smoothing": 0.0, "optim.grad_clip": 0.5,
    "runtime.device": "cpu", "runtime.amp": False, "runtime.autocast_dtype": "fp16", "runtime.compile": "default",
    "runtime.cuda_graphs": True, "runtime.channels_last": True,
    "epochs": 7, "seed": 3, "monitor": "val_loss", "checkpoint_path": "out/best.pth",
    "save_final": True, "evaluate_test": True,
}  # fmt: skip
# A folder dataset would be scanned; its shape is given instead.
SHAPE = {"model.num_classes": 5, "model.in_chans": 1, "model.image_size": 16}


def _parse_train(args: list[str]) -> dict[str, Any]:
    """Parse args with the real `train` command, without running it: its config layer."""
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    ctx = command.make_context("train", list(args))
    return config_layer({name: value for name, value in ctx.params.items() if name in config_flag_table()})


def _full_config() -> TrainConfig:
    tree: dict[str, Any] = {}
    for path, value in {**NON_DEFAULT, **SHAPE}.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.model_validate(tree)


# Every settable field has exactly one flag, and every flag names a settable field.
def test_every_field_has_a_flag() -> None:
    paths = {flag.path for flag in config_flag_table().values()}
    assert paths == set(NON_DEFAULT)  # this dict must list every field: a new one fails here until added
    assert all(has_field(path) for path in paths)
    assert not paths & DATA_SHAPED_PATHS


# A config with every field changed survives config -> flags -> real CLI parser -> config.
def test_every_field_round_trips_through_flags() -> None:
    config = _full_config()
    layer = _parse_train(config_args(config))
    assert set(layer) == set(NON_DEFAULT)
    rebuilt = build_config(layer, source="flags", info=_info())
    assert rebuilt == config


# The reproduce command carries every changed field (beta2 included) and its own checkpoint path.
def test_reproduce_command_keeps_every_field() -> None:
    command = reproduce_command(_full_config())
    assert command.startswith("hvit-sweep train ")
    assert "--beta2 0.98" in command and "--min-lr-ratio 0.05" in command and "--no-amp" in command
    assert "--checkpoint-path checkpoints/reproduced.pth" in command


# --set values go out and come back as the same layer.
def test_set_args_round_trip() -> None:
    layer = {"optim.lr": 0.002, "runtime.cuda_graphs": True, "model.depths": (1, 2), "data.data_dir": Path("d")}
    items = set_args(layer)[1::2]
    assert parse_sets(items) == {
        "optim.lr": 0.002,
        "runtime.cuda_graphs": True,
        "model.depths": [1, 2],
        "data.data_dir": "d",
    }


# --set accepts any settable path, data.image_size included, and refuses shape fields.
@pytest.mark.parametrize("item", ["data.image_size=24", "optim.beta1=0.85"])
def test_set_accepts_full_paths(item: str) -> None:
    assert len(parse_sets([item])) == 1


@pytest.mark.parametrize("item", ["model.num_classes=3", "optim.nope=1", "lr"])
def test_set_refuses_unknown_paths(item: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_sets([item])


# An unknown path is named, with the nearest settable one: the same field in another section first.
@pytest.mark.parametrize(
    ("item", "hint"),
    [("model.lr=1", "did you mean optim.lr?"), ("optim.weight_decy=0.1", "did you mean optim.weight_decay?")],
)
def test_unknown_set_path_names_the_nearest(item: str, hint: str) -> None:
    with pytest.raises(typer.BadParameter, match=f"'{item.split('=')[0]}' is not a config path: {hint}"):
        parse_sets([item])


# --set takes the per-stage list in the flag's form too, and both give the same config.
def test_set_takes_the_flags_list_form() -> None:
    flag_form = parse_sets(["model.embed_dims=64,128,256"])
    toml_form = parse_sets(["model.embed_dims=[64, 128, 256]"])
    assert build_config(flag_form, source="t").model.embed_dims == (64, 128, 256)
    assert build_config(flag_form, source="t") == build_config(toml_form, source="t")


# A flag mistake in `train` is one line from a process that never imported torch.
def test_a_train_flag_mistake_is_answered_before_torch_loads(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom hvit_sweeps.cli import app\n"
        "try:\n    app(['train', '--epochs', '0'])\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules, e.code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.split() == ["False", "2"], out.stdout + out.stderr
    assert "epochs: Input should be greater than or equal to 1" in out.stderr


# Help shows each field's default, with no markup eaten, and never imports torch.
def test_help_shows_defaults_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from hvit_sweeps.cli import app;"
        "r = CliRunner().invoke(app, ['train', '--help'], env={'COLUMNS': '200'}); print(r.output);"
        "assert 'torch' not in sys.modules, 'help imported torch'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "(default: 64,128,256)" in out and "(default: 0.999)" in out and "--beta2" in out


def _info() -> Any:
    from hvit_sweeps.data import DatasetInfo

    return DatasetInfo("folder", 5, 1, 16, tuple("abcde"), (0.5,), (0.25,), synthetic=False, hflip=True)
