"""Check before creating (issue 20): a refused command leaves no file, folder, study or run behind.

Each case runs the real CLI on a new --root and asserts that the root, the journal
and the MLflow database do not exist afterwards, and that the refusal was one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, cli, tiny_study


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, relative, sorted: what a command left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def tiny(workdir: Path) -> Path:
    (workdir / "tiny.toml").write_text(tiny_study("tiny", trials=1, max_epochs=1, train_samples=128))
    return workdir


def test_a_data_dir_that_is_a_file_creates_no_store(tiny: Path) -> None:
    # `run --data-dir FILE` is refused before the root, the journal or mlflow.db exist.
    (tiny / "not-a-folder").write_text("x")
    before = tree(tiny)
    result = cli(
        "run", "--study", "tiny.toml", "--root", "store", "--dataset", "cifar100", "--data-dir", "not-a-folder"
    )
    assert result.returncode == 2 and "error:" in result.stderr, result.stderr
    assert tree(tiny) == before


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_refused_study_file_leaves_no_root(tiny: Path, command: str) -> None:
    # A study file with an unknown key: one line, exit 2, and --root was never created.
    (tiny / "bad.toml").write_text(tiny_study("bad") + "\nbogus = 1\n")
    before = tree(tiny)
    assert_one_line_error(cli(command, "--study", "bad.toml", "--root", "store"), "bogus")
    assert tree(tiny) == before


def test_a_worker_with_missing_data_creates_no_study(tiny: Path) -> None:
    # `worker` checks its data before it creates the study, the parent run or the stores.
    before = tree(tiny)
    result = cli(
        "worker", "--study", "tiny.toml", "--root", "store", "--dataset", "cifar100", "--set", "data.download=false"
    )
    assert_one_line_error(result, "CIFAR-100 not found")
    assert tree(tiny) == before


@pytest.mark.parametrize("command", ["show", "best", "report"])
def test_reading_a_new_root_creates_nothing(tiny: Path, command: str) -> None:
    # Reading commands on a root with no study: one line naming the study, and no empty journal is left.
    before = tree(tiny)
    assert_one_line_error(cli(command, "--study", "tiny", "--root", "store"), "no study named 'tiny'")
    assert tree(tiny) == before


def test_export_into_a_folder_with_files_is_refused_before_reading_the_study(tiny: Path) -> None:
    # `best --export DIR` with files in DIR: one line naming --force, the folder untouched, no store created.
    (tiny / "out").mkdir()
    (tiny / "out" / "config.json").write_text("mine")
    before = tree(tiny)
    assert_one_line_error(cli("best", "--study", "tiny", "--root", "store", "--export", "out"), "--force")
    assert tree(tiny) == before and (tiny / "out" / "config.json").read_text() == "mine"


@pytest.mark.slow
def test_show_through_storage_reads_no_tracking_store_it_lacks(tiny: Path) -> None:
    # `show --storage journal:...` from another folder: the trials and their view link, and no embedded
    # MLflow store is created where the command ran (it was a traceback when the store lacked the study).
    assert cli("run", "--study", "tiny.toml", "--root", "store").returncode == 0
    elsewhere = tiny / "elsewhere"
    elsewhere.mkdir()
    journal = f"journal:{tiny / 'store' / 'optuna.journal'}"
    result = cli("show", "--study", "tiny", "--storage", journal, "--root", str(elsewhere / "mlruns"))
    assert result.returncode == 0, result.stderr
    assert "trials, best first: " in result.stdout and "viewStateShareKey=hvit-tiny" in result.stdout
    assert list(elsewhere.iterdir()) == []
