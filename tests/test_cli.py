from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import Result
from conftest import assert_one_line_error, clean_env
from typer.testing import CliRunner

from hvit_sweeps.checkpoint import load_checkpoint
from hvit_sweeps.cli import app

# A run of about a second: 200 synthetic train images, a two-stage 16/32 model.
TINY = [
    "--dataset", "synthetic", "--max-train-samples", "300", "--max-eval-samples", "100",
    "--num-workers", "0", "--no-amp", "--device", "cpu", "--batch-size", "64",
    "--embed-dims", "16,32", "--depths", "1,1", "--num-heads", "2,2", "--drop-path", "0",
]  # fmt: skip
COMMANDS = ("train", "eval", "run", "worker", "best", "show", "studies", "ui")


def invoke(*args: object) -> Result:
    """The CLI in this process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(output: str) -> str:
    """Output with rich's line wrapping undone (whitespace runs become one space)."""
    return " ".join(output.split())


def epochs_run(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"^epoch (\d+)/\d+", output, flags=re.MULTILINE)]


def table_rows(output: str, first: str) -> list[list[str]]:
    """Cells of the rich table rows whose first cell is ``first``."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if cells and cells[0] == first:
            rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """`train` for 2 epochs, keeping best and last checkpoints; shared by read-only tests."""
    best = tmp_path_factory.mktemp("cli") / "best.pth"
    result = invoke("train", *TINY, "--epochs", 2, "--checkpoint-path", best, "--save-final", "--evaluate-test")
    return best, result


# `train` runs every epoch, says the data is synthetic, and shows best and test metrics.
def test_train_writes_checkpoints_and_reports(trained: tuple[Path, Result]) -> None:
    best, result = trained
    assert result.exit_code == 0, result.output
    assert "dataset: synthetic (random CIFAR-100-shaped data, not real images)" in flat(result.stdout)
    assert epochs_run(result.stdout) == [1, 2]
    assert "completed: trained 2 epochs" in flat(result.stdout)
    assert {row[0] for row in table_rows(result.stdout, "test_acc1")} == {"test_acc1"}
    assert f"bestcheckpoint:{best}" in "".join(result.stdout.split())
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pth", "best_last.pth"]  # no temp files
    assert load_checkpoint(best.with_name("best_last.pth")).epoch == 2


# `eval` rebuilds the val split and reproduces the recorded val metrics.
def test_eval_matches_recorded(trained: tuple[Path, Result]) -> None:
    best, _ = trained
    result = invoke("eval", "--checkpoint", best)
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.stdout
    rows = table_rows(result.stdout, "val")
    assert [row[1] for row in rows] == ["loss", "acc1", "acc5"]
    assert all(len(row) == 4 and row[2] == row[3] for row in rows), rows  # now == recorded
    assert [row[1] for row in table_rows(result.stdout, "test")] == ["loss", "acc1", "acc5"]


# `eval --split val` evaluates only the validation split.
def test_eval_one_split(trained: tuple[Path, Result]) -> None:
    result = invoke("eval", "--checkpoint", trained[0], "--split", "val")
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout, "val") and not table_rows(result.stdout, "test")


# `train --resume` of the last checkpoint runs only the epochs still missing.
def test_resume_runs_only_the_remaining_epoch(trained: tuple[Path, Result], tmp_path: Path) -> None:
    last = shutil.copy(trained[0].with_name("best_last.pth"), tmp_path / "copy_last.pth")
    result = invoke("train", "--resume", last, "--epochs", 3, "--checkpoint-path", tmp_path / "resumed.pth")
    assert result.exit_code == 0, result.output
    assert epochs_run(result.stdout) == [3]
    assert "completed: trained 3 epochs" in flat(result.stdout)
    assert load_checkpoint(tmp_path / "resumed_last.pth").epoch == 3


# Resuming a run from its _last file keeps writing the run's own best and _last files.
def test_resume_from_last_keeps_the_file_names(tmp_path: Path) -> None:
    best = tmp_path / "best.pth"
    assert invoke("train", *TINY, "--epochs", 1, "--checkpoint-path", best, "--save-final").exit_code == 0
    result = invoke("train", "--resume", tmp_path / "best_last.pth", "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "best_last.pth"]
    assert load_checkpoint(tmp_path / "best_last.pth").epoch == 2


# Every bad input ends as one `error:` line on stderr with exit code 2.
@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        pytest.param(["train", "--embed-dims", "64,x"], "'64,x' is not a comma-separated list", id="int-list"),
        pytest.param(["train", "--val-split", "2"], "data.val_split", id="val-split"),
        pytest.param(["train", "--device", "tpu"], "runtime.device: unknown device 'tpu'", id="device"),
        pytest.param(
            ["train", "--embed-dims", "30,64", "--depths", "1,1", "--num-heads", "4,4"],
            "embed_dims 30 is not divisible by num_heads 4",
            id="heads",
        ),
        pytest.param(["train", "--dataset", "nope"], "data.dataset: unknown dataset 'nope'", id="dataset"),
        pytest.param(["train", "--bogus"], "No such option: --bogus", id="unknown-option"),
        pytest.param(["eval", "--checkpoint", "missing.pth"], "checkpoint not found: missing.pth", id="eval-missing"),
        pytest.param(["eval", "--split", "train", "--checkpoint", "x.pth"], "use val, test or both", id="eval-split"),
        pytest.param(["train", "--resume", "missing.pth"], "checkpoint not found", id="resume-missing"),
    ],
)
def test_bad_input_is_one_error_line(args: list[str], phrase: str) -> None:
    assert_one_line_error(invoke(*args), phrase)


# A missing CIFAR-100 with downloads off names the folder to put in place.
def test_missing_cifar100_without_download(tmp_path: Path) -> None:
    result = invoke("train", "--dataset", "cifar100", "--no-download", "--data-dir", tmp_path, "--device", "cpu")
    assert_one_line_error(result, "cifar-100-python")


# `eval` of a file that is not ours is a one-line error.
def test_eval_foreign_file(tmp_path: Path) -> None:
    torch.save({"a": 1}, tmp_path / "foreign.pth")
    assert_one_line_error(invoke("eval", "--checkpoint", tmp_path / "foreign.pth"), "not an hvit-sweep checkpoint")


# `eval` of garbage (a text file) is a one-line error too.
def test_eval_text_file(tmp_path: Path) -> None:
    (tmp_path / "notes.pth").write_text("hello world, not a checkpoint\n")
    assert_one_line_error(invoke("eval", "--checkpoint", tmp_path / "notes.pth"), "not a readable checkpoint")


# Resuming with --epochs not past the checkpoint's epoch says what to pass.
def test_resume_needs_more_epochs(trained: tuple[Path, Result], tmp_path: Path) -> None:
    last = trained[0].with_name("best_last.pth")
    result = invoke("train", "--resume", last, "--epochs", 2, "--checkpoint-path", tmp_path / "r.pth")
    assert_one_line_error(result, "pass --epochs greater than 2")
    assert not (tmp_path / "r.pth").exists()


# A run that fails on its flags, before or at start-up, leaves no checkpoint behind.
@pytest.mark.parametrize(
    "bad", [pytest.param(["--val-split", "2"], id="invalid"), pytest.param(["--device", "cuda:99"], id="no-such-gpu")]
)
def test_failed_train_writes_nothing(tmp_path: Path, bad: list[str]) -> None:
    result = invoke("train", *TINY, *bad, "--epochs", 1, "--checkpoint-path", tmp_path / "out" / "best.pth")
    assert result.exit_code == 2, result.output
    assert list(tmp_path.iterdir()) == []


# A diverged run exits 1, says why, and saves no checkpoint.
def test_diverged_train_exits_1(tmp_path: Path) -> None:
    args = ["--lr", "1e20", "--grad-clip", "0", "--warmup-epochs", "0", "--checkpoint-path", tmp_path / "best.pth"]
    result = invoke("train", *TINY, "--epochs", 2, *args)
    assert result.exit_code == 1, result.output
    assert "diverged: non-finite loss at epoch 1" in flat(result.stdout)
    assert not (tmp_path / "best.pth").exists()


# `python -m hvit_sweeps train` works as a real process.
@pytest.mark.slow
def test_module_entry_point_trains(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "hvit_sweeps", "train", *TINY, "--epochs", "1", "--checkpoint-path", "best.pth"]
    done = subprocess.run(command, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "synthetic" in done.stdout and "Traceback" not in done.stderr
    assert load_checkpoint(tmp_path / "best.pth").epoch == 1


# The installed `hvit-sweep` script lists every command; its errors are one real stderr line.
@pytest.mark.slow
def test_console_script_help_and_error(tmp_path: Path) -> None:
    script = shutil.which("hvit-sweep", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run([script, "--help"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert re.search(rf"^\W*{command}\b", done.stdout, flags=re.MULTILINE), command
    bad = subprocess.run(
        [script, "train", "--val-split", "2"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["error: train flags: data.val_split: Input should be less than 1"]


def _png_tree(root: Path, classes: dict[str, int]) -> None:
    from PIL import Image

    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (12, 12), (40 * i % 255, 80, 120)).save(root / name / f"{i}.png")


# Folder datasets: each broken tree is one clear line with exit code 2.
@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "train"),
        (lambda root: (root / "train").mkdir(parents=True), "train"),
        (
            lambda root: (
                _png_tree(root / "train", {"cat": 3, "dog": 3}),
                _png_tree(root / "val", {"cat": 2, "eel": 2}),
            ),
            "eel",
        ),
        (
            lambda root: (
                _png_tree(root / "train", {"cat": 3, "dog": 3}),
                (root / "train" / "cat" / "bad.png").write_bytes(b"junk"),
            ),
            "bad.png",
        ),
    ],
    ids=["missing", "empty", "no-classes", "val-classes-differ", "unreadable-image"],
)
def test_folder_dataset_errors_are_one_line(tmp_path: Path, make: object, phrase: str) -> None:
    root = tmp_path / "images"
    make(root)
    result = invoke("train", "--dataset", f"folder:{root}", "--epochs", "1", "--num-workers", "0", "--no-amp")
    assert_one_line_error(result, phrase)


# A folder dataset trains end to end through the CLI.
def test_folder_dataset_trains(tmp_path: Path) -> None:
    _png_tree(tmp_path / "images" / "train", {"cat": 10, "dog": 10})
    result = invoke(
        "train",
        "--dataset",
        f"folder:{tmp_path / 'images'}",
        "--epochs",
        "1",
        "--num-workers",
        "0",
        "--no-amp",
        "--embed-dims",
        "16,32",
        "--depths",
        "1,1",
        "--num-heads",
        "2,2",
        "--batch-size",
        "8",
    )
    assert result.exit_code == 0, result.output
    assert "2 classes" in flat(result.stdout)


# Without a terminal, `train` says what it is about to do before the first epoch ends.
def test_train_prints_its_plan_first(trained: tuple[Path, Result]) -> None:
    _, result = trained
    lines = result.stdout.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/"))
    header = "\n".join(lines[:first_epoch])
    assert "dataset: synthetic" in header and "model:" in header and "MFLOPs" in header
    assert "device cpu, fp32, eager steps" in header  # the defaults on a CPU, said up front
