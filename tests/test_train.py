from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SMOKE_DATA, TINY_MODEL
from torch import nn

import hvit_sweeps.saving as saving_module
import hvit_sweeps.train as train_module
from hvit_sweeps.callbacks import Callback, EpochReport, TrainResult
from hvit_sweeps.checkpoint import Checkpoint, load_checkpoint, load_model
from hvit_sweeps.config import OptimConfig, RuntimeConfig, TrainConfig, build_config
from hvit_sweeps.data import FASHION_MNIST_SYSTEM_DIR
from hvit_sweeps.errors import HvitError
from hvit_sweeps.evaluate import evaluate_checkpoint
from hvit_sweeps.metrics import epoch_metrics
from hvit_sweeps.runtime import Precision, resolve_device, resolve_runtime, runtime_notes, step_mode
from hvit_sweeps.steps import EagerStep, GraphedStep, make_step
from hvit_sweeps.train import train

TINY: dict[str, Any] = {**TINY_MODEL, "model.drop_path_rate": 0.0}
SMOKE = SMOKE_DATA  # 200 train images: 3 batches of 64
STEPS_PER_EPOCH = 3
METRIC_KEYS = set(epoch_metrics())  # the registry (tests/test_metrics.py holds it to what the loop produces)


def _metrics(entry: dict[str, float]) -> dict[str, float]:
    """A history entry without its epoch number: what reports and checkpoints carry."""
    return {k: v for k, v in entry.items() if k != "epoch"}


def tiny_config(*layers: dict[str, Any]) -> TrainConfig:
    return build_config(SMOKE, TINY, *layers, source="test")


class Recorder(Callback):
    """Records every hook call; stops with ``reason`` once ``stop_at`` is reached."""

    def __init__(self, *, stop_at: int | None = None, reason: str = "enough") -> None:
        self.stop_at, self.reason = stop_at, reason
        self.batches: list[tuple[int, int]] = []
        self.reports: list[EpochReport] = []

    def on_batch_end(self, batch: int, num_batches: int) -> None:
        self.batches.append((batch, num_batches))

    def on_epoch_end(self, report: EpochReport) -> str | None:
        self.reports.append(report)
        return self.reason if self.stop_at is not None and report.epoch >= self.stop_at else None


@dataclass
class Trained:
    config: TrainConfig
    result: TrainResult
    model: nn.Module  # the in-memory model, holding the best weights (evaluate_test reloads them)
    recorder: Recorder
    best: Path
    last: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One 2-epoch run shared by the read-only tests below."""
    best = tmp_path_factory.mktemp("run") / "best.pth"
    config = tiny_config({"epochs": 2, "checkpoint_path": str(best), "save_final": True, "evaluate_test": True})
    built: list[nn.Module] = []
    real_build = train_module.build_model

    def capture(model_config: Any) -> nn.Module:
        built.append(real_build(model_config))
        return built[-1]

    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_model", capture)
        result = train(config, callbacks=[recorder])
    assert len(built) == 1
    return Trained(config, result, built[0], recorder, best, config.last_checkpoint_path)


# A tiny run completes with one history entry per epoch, each with every metric.
def test_tiny_run_completes_with_full_history(trained: Trained) -> None:
    result = trained.result
    assert (result.status, result.reason, result.epochs_run) == ("completed", "trained 2 epochs", 2)
    assert [h["epoch"] for h in result.history] == [1, 2]
    for entry in result.history:
        assert set(entry) == {"epoch", *METRIC_KEYS}
        assert all(math.isfinite(v) for v in entry.values())
        assert 0 <= entry["val_acc1"] <= entry["val_acc5"] <= 1
        assert entry["images_per_second"] > 0 and entry["epoch_seconds"] > 0
    assert result.dataset_sizes == {"train": 200, "val": 100, "test": 100}
    assert result.dataset.synthetic and len(result.dataset_fingerprint) == 16


# The best epoch is the first one with the highest val_acc1, and its metrics are kept.
def test_best_metrics_are_the_best_epochs(trained: Trained) -> None:
    history = trained.result.history
    top = max(h["val_acc1"] for h in history)
    first_top = next(h for h in history if h["val_acc1"] == top)
    assert trained.result.best_epoch == first_top["epoch"]
    assert trained.result.best_metrics == _metrics(first_top)
    assert trained.result.best_metrics["val_acc1"] == top


# Model size figures are positive and count the real parameters.
def test_model_stats(trained: Trained) -> None:
    stats = trained.result.model_stats
    assert stats["params_m"] > 0 and stats["flops_m"] > 0
    assert stats["params"] == sum(p.numel() for p in trained.model.parameters())
    assert (stats["num_stages"], stats["total_depth"]) == (2, 2)


# evaluate_test adds test metrics of the best weights.
def test_evaluate_test_adds_test_metrics(trained: Trained) -> None:
    assert set(trained.result.test_metrics) == {"test_loss", "test_acc1", "test_acc5"}


# on_batch_end runs once per optimizer step, numbered from 1, every epoch.
def test_on_batch_end_once_per_training_batch(trained: Trained) -> None:
    expected = [(b, STEPS_PER_EPOCH) for b in range(1, STEPS_PER_EPOCH + 1)] * 2
    assert trained.recorder.batches == expected
    assert [(r.epoch, r.epochs) for r in trained.recorder.reports] == [(1, 2), (2, 2)]
    assert trained.recorder.reports[0].metrics == _metrics(trained.result.history[0])


# A callback that returns a reason stops the run after that epoch, with that reason.
def test_callback_reason_stops_the_run() -> None:
    stopper, bystander = Recorder(stop_at=1, reason="pruned at epoch 1"), Recorder()
    result = train(tiny_config({"epochs": 3}), callbacks=[stopper, bystander])
    assert (result.status, result.reason, result.epochs_run) == ("stopped", "pruned at epoch 1", 1)
    assert len(result.history) == 1
    assert [r.epoch for r in bystander.reports] == [1]  # every callback still sees the epoch


# A non-finite loss ends the run as "diverged" (no exception) and saves nothing.
def test_non_finite_loss_diverges(tmp_path: Path) -> None:
    path = tmp_path / "best.pth"
    config = tiny_config(
        {"epochs": 3, "optim.lr": 1e20, "optim.grad_clip": 0, "optim.warmup_epochs": 0, "checkpoint_path": str(path)}
    )
    result = train(config)
    assert (result.status, result.reason, result.epochs_run) == ("diverged", "non-finite loss at epoch 1", 1)
    assert not math.isfinite(result.history[-1]["train_loss"])
    assert result.best_epoch == 0 and not path.exists()


# Mixed precision runs on the CPU; only fp16 keeps a gradient scaler (saved for resume).
@pytest.mark.parametrize(("dtype", "scaled"), [("bf16", False), ("fp16", True)])
def test_autocast_on_cpu(tmp_path: Path, dtype: str, scaled: bool) -> None:
    path = tmp_path / "ckpt.pth"
    config = tiny_config(
        {
            "epochs": 1,
            "runtime.amp": True,
            "runtime.autocast_dtype": dtype,
            "checkpoint_path": str(path),
            "save_final": True,
        }
    )
    result = train(config)
    assert result.status == "completed"
    assert all(math.isfinite(result.history[0][k]) for k in ("train_loss", "val_loss"))
    scaler_state = load_checkpoint(config.last_checkpoint_path).training_state["scaler"]
    assert ("scale" in scaler_state) is scaled


# fp16 autocast on a CPU is allowed but called out (measured 13-35x slower); bf16 and fp32 are not.
def test_fp16_on_cpu_gets_a_note() -> None:
    cpu = torch.device("cpu")
    assert any("fp16" in note for note in runtime_notes(RuntimeConfig(amp=True, autocast_dtype="fp16"), cpu))
    assert runtime_notes(RuntimeConfig(amp=True, autocast_dtype="bf16"), cpu) == []
    assert runtime_notes(RuntimeConfig(amp=False, autocast_dtype="fp16"), cpu) == []
    assert runtime_notes(RuntimeConfig(autocast_dtype="fp16"), cpu) == []  # auto on a CPU is fp32


# Precision maps the runtime settings to an autocast dtype and the scaler rule.
def test_precision_from_runtime() -> None:
    cpu = torch.device("cpu")
    assert Precision.from_runtime(RuntimeConfig(amp=False), cpu).dtype is None
    assert Precision.from_runtime(RuntimeConfig(), cpu).dtype is None  # auto: fp32 on a CPU
    bf16 = Precision.from_runtime(RuntimeConfig(amp=True, autocast_dtype="bf16"), cpu)
    fp16 = Precision.from_runtime(RuntimeConfig(amp=True, autocast_dtype="fp16"), cpu)
    assert (bf16.dtype, bf16.needs_scaler) == (torch.bfloat16, False)
    assert (fp16.dtype, fp16.needs_scaler) == (torch.float16, True)


# The defaults follow the device: fp32 eager on a CPU, bf16 with a CUDA-graphed step on CUDA.
def test_auto_runtime_by_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # resolution is pure logic: no GPU needed
    assert (resolve_runtime(RuntimeConfig(), cpu).amp, step_mode(RuntimeConfig(), cpu)) == (False, "eager")
    on_cuda = resolve_runtime(RuntimeConfig(), cuda)
    assert (on_cuda.amp, on_cuda.autocast_dtype, on_cuda.cuda_graphs) == (True, "bf16", True)
    assert step_mode(RuntimeConfig(), cuda) == "cuda-graph"
    assert step_mode(RuntimeConfig(cuda_graphs=False), cuda) == "eager"  # eager is an explicit choice
    assert resolve_runtime(RuntimeConfig(amp=True), cpu).amp  # asked for, autocast runs on a CPU too


# Where a graph cannot capture the step, auto falls back to eager and says why; CPU runs say nothing.
@pytest.mark.parametrize(
    ("runtime", "mode", "phrase"),
    [
        (RuntimeConfig(autocast_dtype="fp16"), "eager", "scaler"),
        (RuntimeConfig(compile="default"), "compile=default", "--compile"),
    ],
)
def test_auto_graphs_fall_back_with_a_note(runtime: RuntimeConfig, mode: str, phrase: str) -> None:
    cuda = torch.device("cuda")
    assert step_mode(runtime, cuda) == mode
    assert any(phrase in note and "auto" in note for note in runtime_notes(runtime, cuda))
    assert runtime_notes(runtime, torch.device("cpu")) == []


# "cpu" and "auto" always resolve; CUDA without a GPU is a user error, not a crash.
def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HvitError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


# CUDA graphs asked for on the CPU fall back to eager steps, with a note saying so.
def test_cuda_graphs_on_cpu_degrade_with_a_note() -> None:
    result = train(tiny_config({"epochs": 1, "runtime.cuda_graphs": True}))
    assert result.status == "completed"
    assert any("--cuda-graphs" in note and "cpu" in note for note in result.notes), result.notes


# Both step kinds run one EagerStep: a graph captures its update (no zero_grad: the
# gradients are allocated in the graph's pool), while the eager call clears them first.
def test_step_kinds_share_one_eager_step() -> None:
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights, hence the gradients, stay put
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    eager = EagerStep(
        model, optimizer, scaler, Precision("cpu", None), OptimConfig(grad_clip=0), torch.contiguous_format
    )
    assert make_step(eager, graphed=False) is eager
    graphed = make_step(eager, graphed=True)
    assert isinstance(graphed, GraphedStep) and graphed.step is eager and graphed.graph is None
    x, y = torch.randn(2, 4), torch.tensor([0, 2])
    assert "loss" in eager.update(x, y)
    assert model.weight.grad is not None
    first = model.weight.grad.clone()
    eager.update(x, y)
    assert torch.allclose(model.weight.grad, 2 * first)
    eager(x, y)
    assert torch.allclose(model.weight.grad, first)


# The best checkpoint is safe to load and rebuilds a model with the exact best weights.
def test_checkpoint_round_trip_gives_identical_logits(trained: Trained) -> None:
    payload = torch.load(trained.best, weights_only=True)
    assert payload["format"] == "hvit-sweep/checkpoint"
    checkpoint = load_checkpoint(trained.best)
    assert checkpoint.config == trained.config
    assert (checkpoint.epoch, checkpoint.metrics) == (trained.result.best_epoch, trained.result.best_metrics)
    assert len(checkpoint.class_names) == 100 and checkpoint.versions["hvit_sweeps"]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = load_model(checkpoint).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), trained.model.eval()(x))


# The _last checkpoint holds the final epoch plus everything --resume needs.
def test_last_checkpoint_has_training_state(trained: Trained) -> None:
    last = load_checkpoint(trained.last)
    assert last.epoch == 2 and last.metrics == _metrics(trained.result.history[-1])
    state = last.training_state
    assert set(state) == {"optimizer", "scheduler", "scaler", "history", "best"}
    assert state["scheduler"]["last_epoch"] == 2 * STEPS_PER_EPOCH
    assert state["history"] == trained.result.history
    assert state["best"] == {"epoch": trained.result.best_epoch, "metrics": trained.result.best_metrics}
    assert not any(p.name.endswith(".tmp") for p in trained.best.parent.iterdir())  # atomic writes leave no temp


def _resume_config(checkpoint: Checkpoint, *layers: dict[str, Any]) -> TrainConfig:
    return build_config(checkpoint.config.model_dump(mode="json"), *layers, source="resume")


# Resuming runs only the missing epochs, continuing the history and the optimizer's step count.
def test_resume_runs_only_the_missing_epochs(trained: Trained, tmp_path: Path) -> None:
    last = load_checkpoint(trained.last)
    config = _resume_config(last, {"epochs": 3, "checkpoint_path": str(tmp_path / "r.pth")})
    recorder = Recorder()
    result = train(config, callbacks=[recorder], resume=last)
    assert result.status == "completed" and result.epochs_run == 3
    assert [r.epoch for r in recorder.reports] == [3]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[:2] == trained.result.history
    resumed = load_checkpoint(config.last_checkpoint_path)  # save_final comes from the saved config
    assert resumed.training_state["scheduler"]["last_epoch"] == 3 * STEPS_PER_EPOCH
    steps = {int(s["step"]) for s in resumed.training_state["optimizer"]["state"].values()}
    assert steps == {3 * STEPS_PER_EPOCH}


# best_checkpoint="at_end" (sweep trials) writes one weights-only file, of the best epoch, after training.
def test_best_checkpoint_at_end_writes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    real_save = saving_module.save_checkpoint

    def counting_save(path: Path, **kwargs: Any) -> None:
        writes.append(kwargs["epoch"])
        real_save(path, **kwargs)

    monkeypatch.setattr(saving_module, "save_checkpoint", counting_save)
    config = tiny_config({"epochs": 3, "checkpoint_path": str(tmp_path / "best.pth")})
    result = train(config, best_checkpoint="at_end")
    saved = load_checkpoint(tmp_path / "best.pth")
    assert writes == [result.best_epoch] and saved.epoch == result.best_epoch
    assert saved.metrics == result.best_metrics and "optimizer" not in saved.training_state
    assert [row["epoch"] for row in saved.training_state["history"]] == [1, 2, 3]  # kept for the curves


# A resumed run follows the schedule of a straight run of the same length.
def test_resumed_lr_matches_a_straight_run(trained: Trained) -> None:
    last = load_checkpoint(trained.last)
    resumed = train(_resume_config(last, {"epochs": 3, "checkpoint_path": None, "save_final": False}), resume=last)
    straight = train(tiny_config({"epochs": 3}))
    assert resumed.history[2]["lr"] == pytest.approx(straight.history[2]["lr"])


# A run stopped after epoch 2 and resumed trains epoch 3 exactly as an uninterrupted run does:
# same batches, augmentation and drop-path masks, same optimizer state.
def test_resumed_epoch_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    config = tiny_config(
        {"epochs": 3, "model.drop_path_rate": 0.1, "save_final": True, "checkpoint_path": str(tmp_path / "stopped.pth")}
    )
    train(config, callbacks=[Recorder(stop_at=2)])
    last = load_checkpoint(config.last_checkpoint_path)
    resumed = train(_resume_config(last, {"checkpoint_path": str(tmp_path / "resumed.pth")}), resume=last)
    straight = train(config.model_copy(update={"checkpoint_path": None, "save_final": False}))
    timing = {"epoch_seconds", "images_per_second"}
    for got, want in zip(resumed.history, straight.history, strict=True):
        assert {k: v for k, v in got.items() if k not in timing} == {k: v for k, v in want.items() if k not in timing}


# Resuming a finished checkpoint, or with another model, is refused with the fix.
def test_resume_refusals(trained: Trained) -> None:
    last = load_checkpoint(trained.last)
    with pytest.raises(HvitError, match="pass --epochs greater than 2"):
        train(_resume_config(last, {"epochs": 2}), resume=last)
    with pytest.raises(HvitError, match="holds a different model"):
        train(_resume_config(last, {"epochs": 3, "model.depths": [2, 1]}), resume=last)


def _save(path: Path, payload: Any) -> Path:
    torch.save(payload, path)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tampered(source: Path, dest: Path) -> Path:
    payload = torch.load(source, weights_only=True)
    name = next(iter(payload["model_state"]))
    payload["model_state"][name] = torch.zeros(3, 3, 3)
    torch.save(payload, dest)
    return dest


# Each kind of bad checkpoint is one HvitError with its own phrase.
@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        pytest.param(lambda d, good: d / "missing.pth", "checkpoint not found", id="missing"),
        pytest.param(lambda d, good: _save(d / "f.pth", {"a": 1}), "is not an hvit-sweep checkpoint", id="foreign"),
        pytest.param(
            lambda d, good: _write(d / "c.pth", random.Random(0).randbytes(2000)),
            "is not a readable checkpoint",
            id="random-bytes",
        ),
        pytest.param(
            lambda d, good: _write(d / "t.pth", good.read_bytes()[:-100]),
            "is not a readable checkpoint",
            id="truncated",
        ),
        pytest.param(lambda d, good: _write(d / "e.pth", b""), "is not a readable checkpoint", id="empty"),
        pytest.param(
            lambda d, good: _save(d / "n.pth", {"format": "hvit-sweep/checkpoint", "format_version": 99}),
            "upgrade hvit-sweep",
            id="newer-format",
        ),
        pytest.param(
            lambda d, good: _write(d / "x.pth", b"hello world, not a checkpoint\n"),
            "is not a readable checkpoint",
            id="text-file",
        ),
        pytest.param(
            lambda d, good: _write(d / "r.pth", random.Random(2).randbytes(2000)),
            "is not a readable checkpoint",
            id="random-bytes-2",
        ),
        pytest.param(
            lambda d, good: _save(d / "h.pth", {"format": "hvit-sweep/checkpoint", "format_version": 1}),
            None,
            id="header-only",
        ),
    ],
)
def test_bad_checkpoints_are_user_errors(trained: Trained, tmp_path: Path, make: Any, phrase: str | None) -> None:
    path = make(tmp_path, trained.best)
    with pytest.raises(HvitError, match=phrase) as err:
        load_checkpoint(path)
    assert path.name in str(err.value) and "\n" not in str(err.value)


# Weights that no longer fit the saved config fail in load_model with their own phrase.
def test_tampered_weights_fail_to_load(trained: Trained, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(_tampered(trained.best, tmp_path / "tampered.pth"))
    with pytest.raises(HvitError, match="weights do not match the saved model config"):
        load_model(checkpoint)


# Evaluating a checkpoint rebuilds its val split and reproduces the recorded metrics.
def test_evaluate_checkpoint_reproduces_recorded_metrics(trained: Trained) -> None:
    checkpoint = load_checkpoint(trained.best)
    results, data = evaluate_checkpoint(checkpoint)
    assert data.fingerprint == trained.result.dataset_fingerprint
    val, recorded = results["val"], checkpoint.metrics
    assert (val["acc1"], val["acc5"]) == (recorded["val_acc1"], recorded["val_acc5"])
    assert val["loss"] == pytest.approx(recorded["val_loss"], abs=1e-5)
    test = {f"test_{k}": v for k, v in results["test"].items()}
    assert test == pytest.approx(trained.result.test_metrics, abs=1e-5)


# One epoch on 2,000 real Fashion-MNIST images learns far above chance (10%).
@pytest.mark.slow  # a real training run: 1 s on an idle machine, over 10 s on a loaded one
@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason=f"{FASHION_MNIST_SYSTEM_DIR} is absent")
def test_learns_real_fashion_mnist(tmp_path: Path) -> None:
    config = build_config(
        {
            "data.dataset": "fashion-mnist",
            "data.data_dir": str(tmp_path),  # empty: the Debian files are used
            "data.download": False,
            "data.max_train_samples": 2000,
            "data.max_eval_samples": 1000,
            "data.batch_size": 32,
            "data.augment": "none",
            "data.loader": "device",
            "data.num_workers": 0,
            "model.embed_dims": [32, 64],
            "model.depths": [1, 1],
            "model.num_heads": [2, 2],
            "model.patch_size": 4,
            "model.drop_path_rate": 0.0,
            "optim.lr": 4e-3,
            "optim.warmup_epochs": 0,
            "optim.min_lr_ratio": 1.0,  # a constant lr: one short epoch needs all of it
            "optim.label_smoothing": 0.0,
            "runtime.device": "cpu",
            "runtime.amp": False,
            "epochs": 1,
        }
    )
    result = train(config)
    accuracy = result.history[-1]["val_acc1"]
    print(f"fashion-mnist val_acc1 after 1 epoch on {result.dataset_sizes}: {accuracy:.3f}")
    assert result.dataset.name == "fashion-mnist" and not result.dataset.synthetic
    assert accuracy > 0.4
