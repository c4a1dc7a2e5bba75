"""Cost per trial, measured: the meter, its figures on every trial run, and packing by measured memory."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import SMOKE_DATA, TINY_MODEL, hvit, ok, tiny_study
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hvit_sweeps import packing
from hvit_sweeps.config import build_config
from hvit_sweeps.cost import CostMeter, format_cost
from hvit_sweeps.keys import ATTR_COST, ATTR_DEVICE, ATTR_RUN_ID, TAG_COST_BASIS, cost_metric
from hvit_sweeps.metrics import cost_metrics, tracked_metric, view_metrics
from hvit_sweeps.mlflow_view import read_study_view, view_key
from hvit_sweeps.packing import CardMemory, choose_trials_per_gpu, study_trial_bytes
from hvit_sweeps.study import load_study
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.train import train

GIB = 2**30
MB = 2**20


def test_train_returns_every_cost_figure() -> None:
    config = build_config(SMOKE_DATA, TINY_MODEL, {"epochs": 2})
    result = train(config)
    assert set(result.cost) == set(cost_metrics()) and result.cost_device == "cpu"
    assert result.cost["latency_batch"] == 32  # 100 val images: a full latency batch
    for name in ("wall_seconds", "device_seconds", "peak_memory_mb", "train_images_per_second", "latency_ms"):
        assert result.cost[name] > 0, name
    speeds = [h["images_per_second"] for h in result.history]
    assert result.cost["train_images_per_second"] == pytest.approx(sum(speeds) / len(speeds))
    assert "dev-s" in format_cost(result.cost) and "ms/32" in format_cost(result.cost)


def test_peak_memory_is_the_runs_own() -> None:
    # A run that held 300 MB more than the next one shows it; the next one starts from a reset peak.
    import torch

    first = CostMeter.start(torch.device("cpu"))
    block = bytearray(300 * MB)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
    held = first.finish([])["peak_memory_mb"]
    del block
    second = CostMeter.start(torch.device("cpu"))
    assert second.rss_reset, "this Linux cannot reset the peak RSS: peaks would be lifetime peaks"
    assert second.finish([])["peak_memory_mb"] < held - 200


def test_cost_objectives_are_tracked_under_cost() -> None:
    assert tracked_metric("latency_ms") == cost_metric("latency_ms") == "cost/latency_ms"


def _trial(params: dict, *, device: str, peak_mb: float) -> optuna.trial.FrozenTrial:
    distributions = {
        "optim.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
        "stages.num_stages": optuna.distributions.IntDistribution(1, 2),
        "stages.base_width": optuna.distributions.CategoricalDistribution([16, 32]),
        "stages.depth_0": optuna.distributions.IntDistribution(1, 2),
    }
    return optuna.trial.create_trial(
        params=params,
        distributions={k: distributions[k] for k in params},
        value=0.5,
        user_attrs={ATTR_COST: {"peak_memory_mb": peak_mb, "device_seconds": 1.0}, ATTR_DEVICE: device},
    )


SMALL = {"optim.lr": 3e-3, "stages.num_stages": 1, "stages.base_width": 16, "stages.depth_0": 1}


def test_packing_calibrates_the_estimate_by_measured_peaks() -> None:
    spec, _ = load_study("smoke")
    cli: dict = {}
    estimate = study_trial_bytes(spec, cli)
    own = packing.trial_bytes(spec.trial_config(spec.suggest(optuna.trial.FixedTrial(SMALL)), cli))
    # No CUDA measurement (a CPU trial's RSS says nothing about a card): the estimate, and the line says so.
    assert packing.per_trial_bytes(spec, cli, [_trial(SMALL, device="cpu", peak_mb=10_000)]) == (
        estimate,
        "estimated for the largest model of the study",
    )
    # A small trial measured at twice its own estimate doubles the largest model's.
    peak_mb = (2 * own - packing.CONTEXT_BYTES) / MB
    measured, basis = packing.per_trial_bytes(spec, cli, [_trial(SMALL, device="cuda", peak_mb=peak_mb)])
    assert measured == pytest.approx(2 * estimate, rel=1e-6)
    assert basis.startswith("from the peak memory measured by 1 trial(s)")
    card = CardMemory("fake 24 GB", 24 * GIB, 24 * GIB)
    chosen = choose_trials_per_gpu(measured, card, cpu_count=64, cap=64, basis=basis)
    assert chosen.memory_k == int(24 * GIB * packing.USABLE_SHARE) // measured
    assert "measured by 1 trial(s)" in chosen.reason


def test_stored_trials_reads_a_study_without_creating_one(tmp_path: Path) -> None:
    assert packing.stored_trials(None, tmp_path, "smoke") == []
    assert not (tmp_path / "optuna.journal").exists()
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(study_name="smoke", storage=storage, direction="maximize")
    study.add_trial(_trial(SMALL, device="cuda", peak_mb=100))
    assert [t.user_attrs[ATTR_DEVICE] for t in packing.stored_trials(None, tmp_path, "smoke")] == ["cuda"]
    assert packing.stored_trials(None, tmp_path, "other") == []


@pytest.mark.slow
def test_every_trial_run_logs_its_cost_pruned_ones_included(workdir: Path) -> None:
    # One trial is pruned (a threshold no accuracy reaches, from epoch 2), one completes (1 epoch).
    study_file = tiny_study("costed", max_epochs=2, pruner='type = "threshold"\nlower = 1.5\nn_warmup_steps = 2')
    (workdir / "costed.toml").write_text(study_file)
    ok(hvit("run", "--study", "costed.toml", "--trials", "1", "--set", "epochs=1", cwd=workdir))
    ok(hvit("run", "--study", "costed.toml", "--study-name", "costed2", "--trials", "1", cwd=workdir))
    client = MlflowClient(f"sqlite:///{(workdir / 'mlruns' / 'mlflow.db').resolve()}")
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / "mlruns" / "optuna.journal")))
    states = []
    for name in ("costed", "costed2"):
        (trial,) = optuna.load_study(study_name=name, storage=storage).trials
        states.append(trial.state)
        run = client.get_run(trial.user_attrs[ATTR_RUN_ID])
        assert {cost_metric(m) for m in cost_metrics()} <= set(run.data.metrics), run.data.metrics
        assert run.data.tags[TAG_COST_BASIS] == "process CPU time (user + system, all threads)"
        assert trial.user_attrs[ATTR_COST]["latency_ms"] == run.data.metrics[cost_metric("latency_ms")]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    # The saved view: cost columns, and the objective charted against device-seconds.
    experiment = client.get_experiment_by_name("costed2").experiment_id
    state = read_study_view(Tracker(None, root=workdir / "mlruns"), experiment, view_key("costed2"))
    assert state is not None
    assert {f"metrics.`{m}`" for m in view_metrics() if m.startswith("cost/")} <= set(state["selectedColumns"])
    scatter = state["compareRunCharts"][-1]
    assert scatter["type"] == "SCATTER" and scatter["xaxis"]["key"] == "cost/device_seconds"
    assert scatter["yaxis"]["key"] == "best/val_acc1"
    shown = ok(hvit("show", "--study", "costed2", cwd=workdir)).stdout
    assert "cost" in shown and "dev-s" in shown


def test_run_reason_line_says_it_packed_by_measured_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `run --trials-per-gpu auto` on a (faked) CUDA host, for a study whose trials measured their peaks.
    import torch

    from hvit_sweeps.app.sweeps import choose_packing as _packing
    from hvit_sweeps.sweep import Sweep

    spec, path = load_study("smoke")
    sweep = Sweep(
        spec=spec, spec_path=path, study_name="smoke", storage_url=None, tracking_uri="sqlite://", root=tmp_path
    )
    monkeypatch.setattr(packing, "probe_card", lambda devices: CardMemory("fake 80 GB", 80 * GIB, 79 * GIB))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 16)
    _packing(sweep, None, "auto", workers=None)
    assert "estimated for the largest model of the study" in " ".join(capsys.readouterr().out.split())
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(study_name="smoke", storage=storage, direction="maximize")
    study.add_trial(_trial(SMALL, device="cuda", peak_mb=40_000))  # a measured 40 GB trial: 1 per card
    assert _packing(sweep, None, "auto", workers=None) == (["0"], 1)
    assert "from the peak memory measured by 1 trial(s)" in " ".join(capsys.readouterr().out.split())
