"""Checkpoints: atomic writes with shared permissions, a versioned header, safe loading only.

Damaged and tampered files met in training (truncated, random bytes, wrong weights) are
covered in test_train.py against a real run's checkpoint; these use a model built here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from hvit_sweeps.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from hvit_sweeps.config import TrainConfig, build_config
from hvit_sweeps.errors import HvitError
from hvit_sweeps.model import build_model

TINY = {"data.dataset": "synthetic", **TINY_MODEL}


@pytest.fixture(scope="module")
def config() -> TrainConfig:
    return build_config(TINY, source="test")


def save(path: Path, config: TrainConfig, *, epoch: int = 3) -> Path:
    torch.manual_seed(epoch)
    model = build_model(config.model)
    save_checkpoint(path, model=model, config=config, epoch=epoch, metrics={"val_acc1": 0.25}, class_names=["a", "b"])
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# What is saved comes back: config, epoch, metrics, class names, and weights that load strictly.
def test_round_trip(tmp_path: Path, config: TrainConfig) -> None:
    checkpoint = load_checkpoint(save(tmp_path / "best.pth", config))
    assert checkpoint.config == config
    assert (checkpoint.epoch, checkpoint.metrics, checkpoint.class_names) == (3, {"val_acc1": 0.25}, ["a", "b"])
    assert set(checkpoint.versions) == {"hvit_sweeps", "torch"}
    torch.manual_seed(3)
    expected = build_model(config.model).state_dict()
    loaded = load_model(checkpoint).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


# The parent folder is made on demand.
def test_save_makes_missing_folders(tmp_path: Path, config: TrainConfig) -> None:
    assert load_checkpoint(save(tmp_path / "a" / "b" / "best.pth", config)).epoch == 3


# A checkpoint is 0666 less the umask (0644 under 022), like any file the user writes, not mkstemp's 0600.
def test_file_mode_follows_the_umask(tmp_path: Path, config: TrainConfig, umask_022: None) -> None:
    path = save(tmp_path / "best.pth", config)
    assert path.stat().st_mode & 0o777 == 0o644


# A write that fails midway leaves the previous checkpoint whole and no temporary file behind.
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path / "best.pth", config, epoch=1)
    before = path.read_bytes()

    def broken_save(payload: object, handle) -> None:
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save(path, config, epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth"]


# A file without the hvit-sweep header is refused as foreign, whatever else it holds.
def test_foreign_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"format": "someone-else", "model_state": {}, "config": {}, "epoch": 1}, path)
    with pytest.raises(HvitError, match=f"not an hvit-sweep checkpoint \\(no '{FORMAT}' header\\)"):
        load_checkpoint(path)


# A newer format version asks for an upgrade instead of misreading the file.
def test_newer_format_version_is_refused(tmp_path: Path, config: TrainConfig) -> None:
    path = save(tmp_path / "best.pth", config)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(HvitError, match=f"format {FORMAT_VERSION + 1}, newer than this hvit-sweep"):
        load_checkpoint(path)


# A header without the config, weights or epoch names what is missing.
def test_incomplete_checkpoint_names_the_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "epoch": 1}, path)
    with pytest.raises(HvitError, match="incomplete checkpoint \\(no config, model_state\\)"):
        load_checkpoint(path)


# A folder passed as the checkpoint is one clear error that names the .pth files inside it.
def test_directory_is_refused_with_a_hint(tmp_path: Path, config: TrainConfig) -> None:
    with pytest.raises(HvitError, match="is a directory, not a checkpoint: pass the .pth file inside it"):
        load_checkpoint(tmp_path)
    save(tmp_path / "best.pth", config)
    with pytest.raises(HvitError, match="is a directory, not a checkpoint: pass one of best.pth"):
        load_checkpoint(tmp_path)


class _Payload:
    """A pickle that would touch a file when unpickled by a full (unsafe) loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


# Loading is weights_only: a pickle carrying code is refused and its code never runs.
def test_foreign_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"format": FORMAT, "payload": _Payload(marker)}, path)
    with pytest.raises(HvitError, match="not a readable checkpoint .*not a safe torch file"):
        load_checkpoint(path)
    assert not marker.exists()
