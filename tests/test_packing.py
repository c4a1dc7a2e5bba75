"""``--trials-per-gpu auto``: the memory estimate and the choice of K, on faked CUDA cards."""

from __future__ import annotations

import pytest
import torch

from hvit_sweeps import packing
from hvit_sweeps.config import build_config
from hvit_sweeps.model import build_model, count_parameters
from hvit_sweeps.packing import (
    CardMemory,
    choose_trials_per_gpu,
    study_trial_bytes,
    trial_bytes,
)
from hvit_sweeps.study import load_study

GIB = 2**30
H100 = CardMemory("NVIDIA H100 80GB HBM3", 80 * GIB, 79 * GIB)

ARCHITECTURES = [
    {},
    {"model.embed_dims": [96, 144, 224, 336], "model.depths": [4, 1, 4, 2], "model.num_heads": [3, 3, 7, 7]},
    {"model.embed_dims": [32, 64], "model.depths": [1, 3], "model.num_heads": [1, 2], "model.mlp_ratio": 3.0},
]


@pytest.mark.parametrize("layer", ARCHITECTURES)
def test_parameter_estimate_matches_the_built_model(layer: dict) -> None:
    # The formula counts the same layers that model.py builds, so it is exact, not approximate.
    config = build_config({"data.dataset": "synthetic", **layer})
    assert packing.estimate_parameters(config.model) == count_parameters(build_model(config.model))


def test_fp32_activations_take_twice_autocast() -> None:
    model = build_config({"data.dataset": "synthetic"}).model
    bf16 = packing.activation_bytes(model, batch_size=512, amp=True)
    assert packing.activation_bytes(model, batch_size=512, amp=False) == 2 * bf16
    assert packing.activation_bytes(model, batch_size=256, amp=True) == pytest.approx(bf16 / 2, rel=1e-6)


def test_cpu_loader_keeps_no_dataset_on_the_card() -> None:
    device = build_config({"data.dataset": "synthetic", "data.loader": "device"})
    cpu = build_config({"data.dataset": "synthetic", "data.loader": "cpu"})
    assert trial_bytes(device) - trial_bytes(cpu) == 60_000 * 3 * 32 * 32


def test_big_card_is_capped_by_the_bench() -> None:
    # The default model needs about 1 GiB, so memory would allow dozens; the bench's cap wins.
    per_trial = trial_bytes(build_config({"data.dataset": "synthetic", "data.batch_size": 512}))
    chosen = choose_trials_per_gpu(per_trial, H100, cpu_count=16)
    assert chosen.k == packing.MAX_USEFUL_K
    assert chosen.memory_k > 30
    assert "H100" in chosen.reason and "cap" in chosen.reason and "\n" not in chosen.reason


def test_small_card_is_limited_by_memory() -> None:
    card = CardMemory("small card", 8 * GIB, int(2.5 * GIB))
    chosen = choose_trials_per_gpu(GIB, card, cpu_count=16)
    assert chosen.k == 2 and "limited by memory" in chosen.reason


def test_a_model_too_big_for_the_card_still_gets_one_trial() -> None:
    assert choose_trials_per_gpu(100 * GIB, H100, cpu_count=16).k == 1


def test_few_cores_limit_k() -> None:
    chosen = choose_trials_per_gpu(GIB, H100, cpu_count=4, gpus=2)
    assert chosen.k == 2 and "4 CPU cores" in chosen.reason


def test_no_cuda_runs_one_trial_at_a_time() -> None:
    chosen = choose_trials_per_gpu(GIB, None)
    assert chosen.k == 1 and "no CUDA" in chosen.reason


def test_study_estimate_takes_the_largest_corner() -> None:
    # depth-width searches up to 4 stages of width 96 x 2^i and depth 4: far above its smallest corner.
    spec, _ = load_study("depth-width")
    cli = {"data.dataset": "synthetic"}
    largest = study_trial_bytes(spec, cli)
    smallest = trial_bytes(spec.trial_config(next(iter(spec.stages.corner_architectures())), cli))
    assert largest > smallest


def test_probe_reads_the_card_with_least_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    free = {0: 70 * GIB, 1: 40 * GIB}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (free[index], 80 * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"fake GPU {index}")
    assert packing.probe_card().name == "fake GPU 1"
    assert packing.probe_card(["0"]).free_bytes == 70 * GIB


def test_probe_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert packing.probe_card() is None


def _smoke_sweep(cli: dict) -> object:
    from pathlib import Path

    from hvit_sweeps.sweep import Sweep

    spec, path = load_study("smoke", cli=cli)
    return Sweep(
        spec=spec,
        spec_path=path,
        study_name="smoke",
        storage_url=None,
        tracking_uri="sqlite://",
        root=Path("x"),
        cli=cli,
    )


# `run` with no packing flag packs every visible GPU on a CUDA host, and runs one process on a CPU host.
def test_run_packs_every_visible_gpu_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from hvit_sweeps.app.sweeps import choose_packing as _packing

    monkeypatch.setattr(packing, "probe_card", lambda devices: H100)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 16)  # a GPU host's cores, not this machine's
    gpus, k = _packing(_smoke_sweep({}), None, "auto", workers=None)
    assert gpus == ["0", "1"] and 1 < k <= packing.MAX_USEFUL_K
    monkeypatch.setattr(packing, "probe_card", lambda devices: None)  # no CUDA
    assert _packing(_smoke_sweep({}), None, "auto", workers=None) == (None, 1)
    assert _packing(_smoke_sweep({"runtime.device": "cpu"}), None, "auto", workers=None) == (None, 1)
    assert _packing(_smoke_sweep({}), ["1"], "3", workers=None) == (["1"], 3)  # an explicit K wins
