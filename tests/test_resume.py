"""A trial killed mid-way is retried from its last completed epoch (hvit_sweeps/sweep/resume.py), on the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import clean_env, hvit, ok, tiny_study
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps.data import load_dataset
from hvit_sweeps.keys import ATTR_EPOCH, ATTR_EPOCHS, ATTR_RUN_ID
from hvit_sweeps.study import load_study
from hvit_sweeps.sweep.resume import RESUME_DIR, TAG_RESUME, TAG_TRAINED_EPOCHS
from hvit_sweeps.train import train

pytestmark = pytest.mark.slow  # CLI subprocesses

EPOCHS = 6
KILL_AFTER = 3
SAMPLER = '[sampler]\ntype = "tpe"\nseed = 0\n'


def _study(root: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def _epoch_of_trial_0(root: Path, name: str) -> int:
    try:
        trials = _study(root, name).get_trials(deepcopy=False)
    except (KeyError, ValueError, OSError):
        return 0
    return int(trials[0].user_attrs.get(ATTR_EPOCH, 0)) if trials else 0


def _kill_after_epoch(cwd: Path, name: str, epoch: int) -> None:
    """Run the sweep and SIGKILL it (its whole session) as soon as trial 0 has reported ``epoch``."""
    with open(cwd / "killed.out", "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hvit_sweeps", "run", "--study", "sweep.toml", "--root", "store"],
            cwd=cwd,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while _epoch_of_trial_0(cwd / "store", name) < epoch:
            assert process.poll() is None, (cwd / "killed.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "trial 0 did not reach the epoch in time"
            time.sleep(0.05)
        time.sleep(0.3)  # past the epoch's journal writes, inside the next epoch's batches (seconds each)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_killed_trial_resumes_at_its_next_epoch_and_matches_an_uninterrupted_run(workdir: Path) -> None:
    # Kill a 6-epoch trial after epoch 3; `run --resume` retries it with the same params from its checkpoint:
    # the retry trains epochs 4-6 only, Optuna and MLflow hold epochs 1-6 once each, and its result equals an
    # uninterrupted run's with the same seed on the CPU.
    name = "resumed"
    study_file = workdir / "sweep.toml"
    study_file.write_text(tiny_study(name, trials=1, max_epochs=EPOCHS, train_samples=2048, extra=SAMPLER))
    _kill_after_epoch(workdir, name, KILL_AFTER)
    done_before_kill = _epoch_of_trial_0(workdir / "store", name)

    resumed = ok(hvit("run", "--study", "sweep.toml", "--root", "store", "--resume", cwd=workdir, timeout=300))
    trials = _study(workdir / "store", name).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], [t.state for t in trials]
    killed, retry = trials
    assert retry.params == killed.params
    assert f"retry of trial 0 resumes at epoch {done_before_kill + 1}" in resumed.stdout
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    for step in range(1, done_before_kill + 1):  # the pruner keeps the epochs the killed trial reported
        assert retry.intermediate_values[step] == killed.intermediate_values[step]

    client = MlflowClient(f"sqlite:///{(workdir / 'store').resolve()}/mlflow.db")
    run = client.get_run(retry.user_attrs[ATTR_RUN_ID])
    trained = [int(e) for e in run.data.tags[TAG_TRAINED_EPOCHS].split(",")]
    assert trained == list(range(done_before_kill + 1, EPOCHS + 1))
    assert done_before_kill == KILL_AFTER, "the kill came late; the retry still resumed at the epoch after it"
    assert run.data.tags[TAG_RESUME].startswith("retry of trial 0 resumes at epoch 4")
    # Both trials have ended: neither run keeps its resumable checkpoint.
    for run_id in (run.info.run_id, killed.user_attrs[ATTR_RUN_ID]):
        assert not client.list_artifacts(run_id, RESUME_DIR), run_id
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))  # no gap, no step twice

    # The uninterrupted run: the same config and seed, trained in one go in this process.
    spec, _ = load_study(str(study_file), cli={})
    base = spec.trial_config(dict(retry.params), {})
    splits = load_dataset(base.data, seed=base.seed)
    config = spec.trial_config(dict(retry.params), {}, info=splits.info)
    reference = train(config, splits=splits, best_checkpoint="at_end")
    by_step = {m.step: m.value for m in history}
    assert [by_step[row["epoch"]] for row in reference.history] == [row["val_loss"] for row in reference.history]
    assert retry.value == pytest.approx(reference.best_metrics["val_acc1"], abs=0.0)


def test_a_retry_without_a_checkpoint_starts_at_epoch_0_and_says_why(workdir: Path) -> None:
    # A trial killed before its first epoch ended left no checkpoint: its retry trains all epochs and says so.
    name = "fresh"
    (workdir / "sweep.toml").write_text(tiny_study(name, trials=1, max_epochs=2, train_samples=4096, extra=SAMPLER))
    with open(workdir / "killed.out", "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hvit_sweeps", "run", "--study", "sweep.toml", "--root", "store"],
            cwd=workdir,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    try:
        while True:  # until trial 0 has written its start attributes (ATTR_EPOCHS is the last) and trains epoch 1
            try:
                trials = _study(workdir / "store", name).get_trials(deepcopy=False)
            except (KeyError, ValueError, OSError):
                trials = []
            if trials and trials[0].state == TrialState.RUNNING and ATTR_EPOCHS in trials[0].user_attrs:
                break
            assert process.poll() is None and time.monotonic() < deadline, (workdir / "killed.out").read_text()
            time.sleep(0.05)
        # Inside epoch 1 (it takes about a second here; on a quiet machine 2048 images took under 0.5 s and
        # the kill came after it). A kill inside a journal write is healed on the next open (issue 20).
        time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert _epoch_of_trial_0(workdir / "store", name) == 0

    resumed = ok(hvit("run", "--study", "sweep.toml", "--root", "store", "--resume", cwd=workdir, timeout=300))
    assert "retry of trial 0 starts at epoch 0: it saved no resumable checkpoint" in resumed.stdout
    retry = _study(workdir / "store", name).trials[1]
    run = MlflowClient(f"sqlite:///{(workdir / 'store').resolve()}/mlflow.db").get_run(retry.user_attrs[ATTR_RUN_ID])
    assert run.data.tags[TAG_TRAINED_EPOCHS] == "1,2"


def test_uploads_are_skipped_while_they_would_cost_more_than_a_tenth_of_the_training(tmp_path: Path) -> None:
    # A slow upload (0.2 s) after 0.1 s epochs: the first epoch uploads, then each upload waits for 10 times
    # its own cost of training (2 s), and comes at the first epoch end after that.
    from hvit_sweeps.callbacks import EpochReport
    from hvit_sweeps.sweep.resume import EpochCheckpointUpload

    spans: list[tuple[int, float, float]] = []  # (epoch, start, end) of each upload

    class SlowTracker:
        def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
            begin = time.monotonic()
            time.sleep(0.2)
            spans.append((len(upload.trained), begin, time.monotonic()))

    checkpoint = tmp_path / "last.pth"
    checkpoint.write_bytes(b"x")
    upload = EpochCheckpointUpload(SlowTracker(), "run", checkpoint)  # type: ignore[arg-type]
    ends = {}
    for epoch in range(1, 41):
        time.sleep(0.1)
        ends[epoch] = time.monotonic()
        upload.on_epoch_end(EpochReport(epoch=epoch, epochs=40, metrics={}))
    assert upload.trained == list(range(1, 41))
    assert spans[0][0] == 1 and len(spans) >= 2
    for (_, begin, end), (epoch, nxt, _) in zip(spans, spans[1:], strict=False):
        cost = end - begin
        assert nxt - end >= 10 * cost - 0.01  # never more than a tenth of the time uploading
        assert ends[epoch - 1] - end < 10 * cost  # and not later than the first epoch end that allows it
