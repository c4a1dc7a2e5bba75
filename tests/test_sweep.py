"""Sweeps end to end through the real CLI: Optuna storage, MLflow runs, export.

Each test runs `python -m hvit_sweeps` as a subprocess in a fresh directory, on the
tiny synthetic `smoke` study, then reads back what a user would look at: the
Optuna study and the MLflow runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import _wait_healthy, assert_one_line_error, cli, free_port, hvit, ok, tiny_study
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps.keys import ATTR_HOST, ATTR_PID, ATTR_RUN_ID, TAG_FAILURE
from hvit_sweeps.mlflow_view import read_study_view
from hvit_sweeps.study import load_study
from hvit_sweeps.sweep import Connected, open_storage
from hvit_sweeps.sweep.background import wait_for_background
from hvit_sweeps.sweep.objective import _retry_of
from hvit_sweeps.sweep.storage import recover_stale_trials, trial_id
from hvit_sweeps.tracking import Tracker

# Accuracy never exceeds 1, so a lower threshold of 1.5 prunes every trial at its first report.
FORCED_PRUNE = tiny_study("always-pruned", pruner='type = "threshold"\nlower = 1.5\nn_warmup_steps = 0')


def journal_study(root: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def local_client(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{(root / 'mlflow.db').resolve()}")


def study_runs(client: MlflowClient, study: str) -> tuple[object, list[object]]:
    """The study's parent run and its child runs."""
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`hvit.study` = '{study}'")
    parents = [r for r in runs if r.data.tags.get("hvit.role") == "study"]
    children = [r for r in runs if r.data.tags.get("hvit.role") == "trial"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    return parents[0], children


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke sweep of 4 trials on the embedded default, shared by the read-only tests below."""
    cwd = tmp_path_factory.mktemp("smoke")
    (cwd / "studies").symlink_to(Path(__file__).resolve().parents[1] / "studies")
    (cwd / "run.out").write_text(ok(hvit("run", "--study", "smoke", "--trials", "4", cwd=cwd)).stdout)
    wait_for_background(cwd / "mlruns", "smoke")  # plots and visuals are drawn after `run` returns
    return cwd


def fragment_query(url: str) -> dict[str, str]:
    """The query of an MLflow UI link, which sits inside the #fragment."""
    route = urllib.parse.urlsplit(url).fragment
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(route).query))


@pytest.mark.slow
def test_smoke_sweep_fills_optuna_and_mlflow(smoke_sweep: Path) -> None:
    # 4 trials in Optuna; one parent and 4 nested children in MLflow, each with every epoch's metrics.
    root = smoke_sweep / "mlruns"
    study = journal_study(root, "smoke")
    spec, _ = load_study("smoke")
    assert len(study.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    client = local_client(root)
    parent, children = study_runs(client, "smoke")
    assert len(children) == 4
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # Pruned is not failed: FINISHED like a complete trial, and its name says so.
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"trial-{trial.number}" + (" pruned" if trial.state == TrialState.PRUNED else "")
        history = client.get_metric_history(run.info.run_id, "val_acc1")
        assert [m.step for m in history] == sorted(trial.intermediate_values)
        assert run.data.params["data.dataset"] == "synthetic"
        assert float(run.data.params["model.embed_dims.0"]) > 0  # per-stage params are numeric
        assert run.data.metrics["model/params_m"] > 0
        # Every trial logs every hp.* key of the study; one it did not sample is the placeholder 0.
        logged = {k.removeprefix("hp."): v for k, v in run.data.params.items() if k.startswith("hp.")}
        assert set(logged) == set(spec.param_names()) >= set(trial.params)
        assert all(logged[k] == "0" for k in set(logged) - set(trial.params))
        assert run.data.tags["optuna.trial_state"] == trial.state.name
    assert parent.info.status == "FINISHED"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/parallel_coordinate.png"} <= plots
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "study")] == ["study/smoke.toml"]


# `run` ends with links to the trials (flat, best first) and to the study's parent run.
@pytest.mark.slow
def test_run_prints_links_to_the_trials_and_the_study_run(smoke_sweep: Path) -> None:
    out = (smoke_sweep / "run.out").read_text()  # 80 columns: the links must still be whole lines
    client = local_client(smoke_sweep / "mlruns")
    parent, _ = study_runs(client, "smoke")
    trials_link = out.split("trials, best first: ")[1].split("\n")[0]
    # The link opens the study's saved view; the view holds the filter and the sort.
    assert fragment_query(trials_link) == {"workflowType": "machine_learning", "viewStateShareKey": "hvit-smoke"}
    view = read_study_view(Tracker(None, root=smoke_sweep / "mlruns"), parent.info.experiment_id, "hvit-smoke")
    assert view is not None and view["orderByKey"] == "tags.`hvit.rank`"  # best first: complete, then pruned
    study_link = out.split("study run (plots, best so far): ")[1].split("\n")[0]
    route = f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}/artifacts/"
    linked = study_link.split(route)[1].split("?")[0]
    assert linked in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}  # the link opens a real plot
    assert fragment_query(study_link) == {"workflowType": "machine_learning"}
    assert "hvit-sweep ui" in out


# `ui` serves the embedded store and prints each study's trials link.
@pytest.mark.slow
def test_ui_serves_the_embedded_store(smoke_sweep: Path) -> None:
    port = free_port()
    log = smoke_sweep / "ui.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hvit_sweeps", "ui", "--port", str(port)],
            cwd=smoke_sweep,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert b"<html" in page.read(2000).lower()
        deadline = time.monotonic() + 20  # links are printed just after /health answers
        while "trials, best first: " not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        line = next(line for line in log.read_text().splitlines() if "trials, best first: " in line)
        link = line.split("trials, best first: ")[1]
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert fragment_query(link)["viewStateShareKey"] == "hvit-smoke"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.slow
def test_plots_are_real_pngs(smoke_sweep: Path, tmp_path: Path) -> None:
    # The parent's plots are non-trivial PNG files.
    client = local_client(smoke_sweep / "mlruns")
    parent, _ = study_runs(client, "smoke")
    local = Path(client.download_artifacts(parent.info.run_id, "plots", str(tmp_path)))
    for png in local.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png


@pytest.mark.slow
def test_best_export_reproduces_the_recorded_metric(smoke_sweep: Path) -> None:
    # `best --export` writes checkpoint, config, metrics and card; `eval` on it matches the recorded val_acc1.
    ok(result := hvit("best", "--study", "smoke", "--export", "exported", cwd=smoke_sweep))
    out = smoke_sweep / "exported"
    assert {p.name for p in out.iterdir()} == {"best.pth", "config.json", "metrics.json", "MODEL_CARD.md", "visuals"}
    assert (out / "visuals" / "confusion_matrix.png").is_file()  # drawn for the best trials after the sweep
    assert "hvit-sweep eval --checkpoint best.pth" in (out / "MODEL_CARD.md").read_text()
    best_value = journal_study(smoke_sweep / "mlruns", "smoke").best_value
    ok(evaluated := hvit("eval", "--checkpoint", str(out / "best.pth"), "--split", "val", cwd=smoke_sweep))
    row = next(line for line in evaluated.stdout.splitlines() if "acc1" in line)
    now, recorded = [cell.strip() for cell in row.split("│") if cell.strip()][2:4]
    assert now == recorded == f"{100 * best_value:.2f}%", result.stdout


@pytest.mark.slow
def test_show_lists_every_trial(smoke_sweep: Path) -> None:
    # `show` prints one row per trial with its state.
    ok(result := hvit("show", "--study", "smoke", cwd=smoke_sweep))
    assert result.stdout.count("COMPLETE") + result.stdout.count("PRUNED") >= 4
    # One link to the trials, the saved view, as `run` prints it.
    trials_link = result.stdout.split("trials, best first: ")[1].split("\n")[0]
    assert fragment_query(trials_link)["viewStateShareKey"] == "hvit-smoke"


@pytest.mark.slow
def test_reading_commands_do_not_import_torch(smoke_sweep: Path) -> None:
    # `studies`, `show` and `best` only read: they answer in about a second, without torch's import.
    code = (
        "import sys; from typer.testing import CliRunner; from hvit_sweeps.cli import app\n"
        "for args in (['studies'], ['show', '--study', 'smoke'], ['best', '--study', 'smoke']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "    assert 'torch' not in sys.modules, args\n"
    )
    ok(subprocess.run([sys.executable, "-c", code], cwd=smoke_sweep, capture_output=True, text=True, timeout=120))


@pytest.mark.slow
def test_rerun_adds_trials_to_the_same_study_and_parent(smoke_sweep: Path) -> None:
    # Running again adds trials to the same Optuna study and nests them under the same parent run.
    client = local_client(smoke_sweep / "mlruns")
    parent_before, _ = study_runs(client, "smoke")
    ok(hvit("run", "--study", "smoke", "--trials", "1", cwd=smoke_sweep))
    assert len(journal_study(smoke_sweep / "mlruns", "smoke").trials) == 5
    parent_after, children = study_runs(client, "smoke")
    assert parent_after.info.run_id == parent_before.info.run_id and len(children) == 5
    assert parent_after.info.status == "FINISHED"


@pytest.mark.slow
def test_forced_pruning_finishes_the_child_run_as_pruned(workdir: Path) -> None:
    # A pruner that must prune: trials are PRUNED in Optuna, FINISHED and named "pruned" in MLflow after one epoch.
    # --cuda-graphs on a CPU falls back to eager: said once before the sweep and tagged on each run.
    (workdir / "prune.toml").write_text(FORCED_PRUNE)
    result = ok(hvit("run", "--study", "prune.toml", "--set", "runtime.cuda_graphs=true", cwd=workdir))
    assert "note: --cuda-graphs: CUDA graphs need a CUDA device" in " ".join(result.stdout.split())
    study = journal_study(workdir / "mlruns", "always-pruned")
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    client = local_client(workdir / "mlruns")
    _, children = study_runs(client, "always-pruned")
    for run in children:
        assert (run.info.status, run.data.tags["optuna.trial_state"]) == ("FINISHED", "PRUNED")
        assert run.info.run_name.endswith(" pruned")
        assert run.data.tags["optuna.pruned_at_epoch"] == "1"
        assert "running eager steps instead" in run.data.tags["hvit.notes"]
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
    # With no complete trial, `best` says so in one line.
    assert_one_line_error(hvit("best", "--study", "always-pruned", cwd=workdir), "no complete trial")


@pytest.mark.slow
def test_pareto_study_returns_a_pareto_set(workdir: Path) -> None:
    # The two-objective smoke study ends with a non-empty Pareto set and a pareto_front plot.
    ok(hvit("run", "--study", "smoke-pareto", cwd=workdir))
    study = journal_study(workdir / "mlruns", "smoke-pareto")
    assert study.best_trials and all(len(t.values) == 2 for t in study.best_trials)
    ok(result := hvit("best", "--study", "smoke-pareto", cwd=workdir))
    assert "Pareto set" in result.stdout
    wait_for_background(workdir / "mlruns", "smoke-pareto")
    client = local_client(workdir / "mlruns")
    parent, _ = study_runs(client, "smoke-pareto")
    assert "plots/pareto_front.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}


@pytest.mark.slow
def test_three_local_workers_share_the_journal(workdir: Path) -> None:
    # 3 worker processes on the embedded journal storage finish exactly 9 trials, all nested and closed.
    ok(hvit("run", "--study", "smoke", "--trials", "9", "--workers", "3", cwd=workdir, timeout=600))
    study = journal_study(workdir / "mlruns", "smoke")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 9
    assert len({t.number for t in study.trials}) == len(study.trials)
    _, children = study_runs(local_client(workdir / "mlruns"), "smoke")
    trained = [r for r in children if r.data.tags["optuna.trial_state"] != "FAIL"]
    assert len(trained) == 9 and all(r.info.status in ("FINISHED", "KILLED") for r in children)


def test_bad_storage_and_tracking_inputs_fail_in_one_line(workdir: Path) -> None:
    # Unknown storage schemes, unreachable databases and servers, and SQLite with workers are refused up front.
    assert_one_line_error(cli("run", "--study", "smoke", "--storage", "mongodb://x"), "unknown scheme 'mongodb'")
    unreachable_pg = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    assert_one_line_error(cli("run", "--study", "smoke", "--storage", unreachable_pg), "cannot open the Optuna storage")
    assert_one_line_error(
        cli("run", "--study", "smoke", "--tracking-uri", "http://127.0.0.1:1"), "MLflow server not reachable"
    )
    assert_one_line_error(
        cli("run", "--study", "smoke", "--storage", "sqlite:///o.db", "--workers", "2"), "not safe for parallel"
    )
    assert_one_line_error(cli("show", "--study", "nothing-here"), "no study named 'nothing-here'")
    assert_one_line_error(cli("run", "--study", "nope"), "no study named 'nope'")
    assert_one_line_error(
        cli("run", "--study", "smoke", "--devices", "0,1", "--workers", "3"), "does not match --devices"
    )
    journal = workdir / "mlruns" / "optuna.journal"
    if journal.exists():  # nothing half-made: no study was created by any of the refused commands
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        assert optuna.get_all_study_names(storage) == []


@pytest.mark.slow  # trains a real trial in-process
def test_a_changed_definition_never_joins_an_existing_study(workdir: Path) -> None:
    # The same study name with a different dataset is refused instead of mixing results.
    ok(cli("run", "--study", "smoke", "--trials", "1"))
    result = cli("run", "--study", "smoke", "--trials", "1", "--dataset", "fashion-mnist")
    assert_one_line_error(result, "already exists with another definition")


@pytest.mark.slow
def test_ctrl_c_closes_the_trial_and_resume_finishes(workdir: Path) -> None:
    # SIGINT mid-trial: exit 130, the trial is FAIL in Optuna and KILLED in MLflow; --resume reaches the target.
    (workdir / "slow.toml").write_text(tiny_study("interrupted", max_epochs=8, train_samples=640))
    process = subprocess.Popen(
        [sys.executable, "-m", "hvit_sweeps", "run", "--study", "slow.toml"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    journal = workdir / "mlruns" / "optuna.journal"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if journal.exists():
            try:
                study = journal_study(workdir / "mlruns", "interrupted")
                if any(t.user_attrs.get("hvit.epoch", 0) >= 1 for t in study.get_trials(states=(TrialState.RUNNING,))):
                    break
            except KeyError:
                pass
        time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    assert "--resume" in output and "Traceback" not in output
    # On a fast CPU trial 0 may end between the poll and the signal; the signal then stops trial 1.
    study = journal_study(workdir / "mlruns", "interrupted")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and TrialState.RUNNING not in [t.state for t in study.trials], study.trials
    interrupted = failed[0]
    run = local_client(workdir / "mlruns").get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and "interrupted" in run.data.tags["hvit.failure_reason"]

    ok(hvit("run", "--study", "slow.toml", "--resume", cwd=workdir))
    study = journal_study(workdir / "mlruns", "interrupted")
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2


@pytest.mark.slow
def test_keep_top_k_keeps_only_the_best_checkpoints(workdir: Path) -> None:
    # With keep_top_k = 1, exactly one trial (the best) still has a checkpoint artifact.
    (workdir / "top1.toml").write_text(tiny_study("top1", trials=3, max_epochs=1, extra="keep_top_k = 1"))
    ok(hvit("run", "--study", "top1.toml", cwd=workdir))
    study = journal_study(workdir / "mlruns", "top1")
    client = local_client(workdir / "mlruns")
    with_checkpoint = [
        t.number for t in study.trials if client.list_artifacts(t.user_attrs["mlflow_run_id"], "checkpoint")
    ]
    assert with_checkpoint == [study.best_trial.number]


def test_trial_id_is_the_storage_id_of_the_number(tmp_path: Path) -> None:
    # Public storage lookups find each trial's id from its number.
    storage = open_storage(None, root=tmp_path)
    study = optuna.create_study(study_name="ids", storage=storage)
    numbers = [study.ask().number for _ in range(3)]
    assert [storage.get_trial(trial_id(storage, study, n)).number for n in numbers] == numbers


def test_a_dead_local_workers_trial_is_failed_retried_and_closed(
    make_tracker: Callable[[Path], Tracker], tmp_path: Path
) -> None:
    # On a journal, a RUNNING trial whose local process is gone is failed, retried once, and its MLflow run ended FAILED.
    storage = open_storage(None, root=tmp_path)
    study = optuna.create_study(study_name="stale", storage=storage)
    tracker = make_tracker(tmp_path)
    run_id = tracker.client.create_run(tracker.experiment_id("stale")).info.run_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()
    connected = Connected(study=study, storage=storage, experiment_id="", parent_run_id="", target=1)
    assert _retry_of(connected, trial.number) is None
    for key, value in {ATTR_HOST: socket.gethostname(), ATTR_PID: dead.pid, ATTR_RUN_ID: run_id}.items():
        trial.set_user_attr(key, value)
    assert recover_stale_trials(study, storage, tracker, heartbeat=60) == [trial.number]
    assert study.trials[trial.number].state == TrialState.FAIL
    retry = study.ask()  # the retry waits in the queue, so it is asked next
    assert _retry_of(connected, retry.number) == trial.number
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and "stale" in run.data.tags[TAG_FAILURE]
