"""The command line over the application layer: flag mistakes answered before torch loads, and the
printed command lines (`run --resume`, each worker's argv) generated from one table of the sweep options."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_study
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from typer.testing import CliRunner

from hvit_sweeps.app import sweeps
from hvit_sweeps.app.options import resume_command, worker_args
from hvit_sweeps.cli import app
from hvit_sweeps.study import load_study
from hvit_sweeps.sweep import Sweep

MISTAKES = [
    (["run", "--study", "smoke", "--trials-per-gpu", "x"], "a positive number, or auto"),
    (["run", "--study", "smoke", "--budget", "nonsense"], "--budget 'nonsense'"),
    (["run", "--study", "smoke", "--devices", "a,b"], "CUDA device indices"),
    (["run", "--study", "smoke", "--set", "no.such=1"], "'no.such' is not a config path"),
    (["run", "--study", "smoke", "--set", "optim.lr=abc"], "optim.lr: Input should be a valid number"),
    (["worker", "--study", "smoke", "--set", "optim.lr=abc"], "optim.lr: Input should be a valid number"),
    (["best", "--study", "smoke", "--top", "0"], "--top"),
    (["best", "--study", "smoke", "--set", "optim.lr=abc"], "optim.lr: Input should be a valid number"),
    (["best", "--study", "smoke", "--set", "no.such=1"], "'no.such' is not a config path"),
    (["eval", "--split", "x", "--checkpoint", "x.pth"], "use val, test or both"),
    (["eval", "--checkpoint", "x.pth", "--batch-size", "0"], "data.batch_size"),  # x.pth: an empty file
    (["eval", "--checkpoint", "missing.pth"], "checkpoint not found: missing.pth"),
    (["train", "--resume", "."], "is a directory, not a checkpoint"),
    (["show", "--study", "smoke", "--study-name", "a b"], "no spaces"),
]


# Each mistake is one error line (exit 2) from a process that has imported none of torch, MLflow and Optuna.
def test_flag_mistakes_are_answered_before_torch_or_mlflow_loads(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, json, sys\nfrom hvit_sweeps.cli import app\nseen = []\n"
        f"for args in {json.dumps([args for args, _ in MISTAKES])}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n            app(args)\n        except SystemExit as e:\n            code = e.code\n"
        "    seen.append([code, err.getvalue(), 'torch' in sys.modules, 'mlflow' in sys.modules, 'optuna' in sys.modules])\n"
        "print(json.dumps(seen))"
    )
    (tmp_path / "x.pth").write_bytes(b"")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for (args, phrase), (exit_code, stderr, *loaded) in zip(MISTAKES, json.loads(out.stdout), strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)
        assert phrase in lines[0], (args, lines[0])
        assert not any(loaded), (args, dict(zip(("torch", "mlflow", "optuna"), loaded, strict=True)))
    assert not (tmp_path / "mlruns").exists()  # a refused command creates nothing


def _sweep(**changes: Any) -> Sweep:
    spec, path = load_study("smoke")
    fields: dict[str, Any] = {"spec": spec, "spec_path": path, "study_name": "smoke", "root": Path("mlruns")}
    return Sweep(**{**fields, "storage_url": None, "tracking_uri": None, **changes})


# The resume line repeats what names the study, and no store that the environment gives again.
def test_resume_line_leaves_out_defaults_and_env_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resume_command(_sweep(), "smoke") == "hvit-sweep run --study smoke --resume"
    monkeypatch.setenv("HVIT_STORAGE", "postgresql://u:secret@db/optuna")
    sweep = _sweep(
        study_name="other",
        root=Path("my store"),
        storage_url="postgresql://u:secret@db/optuna",
        tracking_uri="http://mlflow:5000",
        cli={"data.dataset": "synthetic", "optim.lr": 0.01},
        heartbeat=30,
    )
    line = resume_command(sweep, "smoke")
    assert line == (
        "hvit-sweep run --study smoke --study-name other --root 'my store' --tracking-uri http://mlflow:5000 "
        "--dataset synthetic --set optim.lr=0.01 --resume"
    )
    # A worker gets everything, the stores included: it is an argv, not a line for a log.
    args = worker_args(sweep, timeout=60.0)
    assert args[args.index("--storage") + 1] == "postgresql://u:secret@db/optuna"
    assert args[args.index("--root") + 1] == "my store" and args[args.index("--heartbeat") + 1] == "30"
    assert args[args.index("--study") + 1] == str(sweep.spec_path) and "--timeout" in args
    assert args[-2:] == ["--set", "optim.lr=0.01"] and "--dataset" not in args


# The printed `continue with:` line, split as a shell would and given to the real CLI, finishes the same study.
def test_printed_resume_line_pasted_back_resumes_the_same_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("HVIT_STORAGE", "MLFLOW_TRACKING_URI", "HVIT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "tiny.toml").write_text(tiny_study("tiny", trials=1, max_epochs=1))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sweeps, "run_trials", interrupted)
    flags = ["--study", "tiny.toml", "--study-name", "tiny-b", "--root", "my store", "--set", "optim.beta2=0.98"]
    first = CliRunner().invoke(app, ["run", *flags])
    assert first.exit_code == 130, first.output
    line = next(x for x in first.output.splitlines() if x.startswith("continue with: ")).removeprefix("continue with: ")
    assert "'my store'" in line and line.endswith("--resume"), line

    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("hvit_sweeps.sweep.background.start_background", lambda **kw: tmp_path / "background.log")
    argv = shlex.split(line)
    assert argv[:2] == ["hvit-sweep", "run"]
    again = CliRunner().invoke(app, argv[1:])
    assert again.exit_code == 0, again.output
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "my store" / "optuna.journal")))
    assert optuna.get_all_study_names(storage) == ["tiny-b"]
    study = optuna.load_study(study_name="tiny-b", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
