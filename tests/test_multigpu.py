"""One host with 8 GPUs, faked: what `run --devices` and `--trials-per-gpu auto` start (README, Scaling 2)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from hvit_sweeps import packing
from hvit_sweeps.app.sweeps import choose_packing as _packing
from hvit_sweeps.study import load_study
from hvit_sweeps.sweep import Sweep
from hvit_sweeps.sweep.workers import worker_plan

GIB = 2**30


def _sweep(study: str) -> Sweep:
    spec, path = load_study(study, cli={})
    return Sweep(
        spec=spec, spec_path=path, study_name=study, storage_url=None, tracking_uri="sqlite://", root=Path("x"), cli={}
    )


@pytest.fixture
def eight_h100(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """8 faked 80 GiB cards; card 5 has 30 GiB taken by someone else. Returns free bytes by index."""
    free = {i: 79 * GIB for i in range(8)}
    free[5] = 49 * GIB
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (free[index], 80 * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA H100 80GB HBM3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return free


def _per_gpu(plans: list[dict[str, str]]) -> Counter[str]:
    return Counter(plan["CUDA_VISIBLE_DEVICES"] for plan in plans)


def test_auto_packs_all_eight_gpus_with_k_each(eight_h100: dict[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # No flag on a 64-core host: every one of the 8 GPUs, K trials each, K from the card with least free memory
    # (card 5) and capped at MAX_USEFUL_K; 8 * K processes, each pinned to one card, the cores shared out.
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 64)
    sweep = _sweep("depth-width")
    gpus, k = _packing(sweep, None, "auto", workers=None)
    per_trial = packing.study_trial_bytes(sweep.spec, sweep.cli)
    memory_k = int(eight_h100[5] * packing.USABLE_SHARE) // per_trial
    assert gpus == [str(i) for i in range(8)]
    assert k == min(memory_k, packing.MAX_USEFUL_K, 64 // 8) and k >= 2
    plans = worker_plan(workers=None, devices=gpus, trials_per_gpu=k)
    assert len(plans) == 8 * k
    assert _per_gpu(plans) == {str(i): k for i in range(8)}
    assert {plan["OMP_NUM_THREADS"] for plan in plans} == {str(64 // (8 * k))}


def test_few_cores_limit_k_on_eight_gpus(eight_h100: dict[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 cores for 8 GPUs: 2 trials per GPU at most (each trial keeps a core busy feeding its card).
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 16)
    gpus, k = _packing(_sweep("depth-width"), None, "auto", workers=None)
    assert len(gpus) == 8 and k == 2
    plans = worker_plan(workers=None, devices=gpus, trials_per_gpu=k)
    assert len(plans) == 16 and {plan["OMP_NUM_THREADS"] for plan in plans} == {"1"}


def test_devices_pick_the_cards_and_an_explicit_k_wins(
    eight_h100: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # --devices 0,2,4,6 --trials-per-gpu 3: 12 processes, 3 on each named card, none on the others.
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 64)
    devices = ["0", "2", "4", "6"]
    gpus, k = _packing(_sweep("depth-width"), devices, "3", workers=None)
    assert (gpus, k) == (devices, 3)
    plans = worker_plan(workers=None, devices=gpus, trials_per_gpu=k)
    assert _per_gpu(plans) == {"0": 3, "2": 3, "4": 3, "6": 3}
    # --devices with auto: K from the least free of the named cards only (5 is not named, so 79 GiB free).
    _, k_named = _packing(_sweep("depth-width"), ["0", "1"], "auto", workers=None)
    _, k_with_5 = _packing(_sweep("depth-width"), ["0", "5"], "auto", workers=None)
    assert k_named >= k_with_5


def test_the_printed_reason_names_the_card_and_the_limit(
    eight_h100: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 16)
    sweep = _sweep("depth-width")
    card = packing.probe_card(None)
    chosen = packing.choose_trials_per_gpu(packing.study_trial_bytes(sweep.spec, sweep.cli), card, gpus=8)
    assert card is not None and card.free_bytes == 49 * GIB
    assert "H100" in chosen.reason and "limited by 16 CPU cores" in chosen.reason
