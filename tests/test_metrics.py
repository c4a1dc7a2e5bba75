"""The metrics registry: every figure a run produces is registered, and every registered one is produced."""

from __future__ import annotations

import pytest
from conftest import SMOKE_DATA, TINY_MODEL

from hvit_sweeps import metrics
from hvit_sweeps.config import build_config
from hvit_sweeps.metrics import METRICS, format_metric
from hvit_sweeps.train import train


def test_every_produced_figure_is_registered_and_every_registered_one_produced() -> None:
    config = build_config(SMOKE_DATA, TINY_MODEL, {"epochs": 1, "evaluate_test": True})
    result = train(config)
    produced = {
        "epoch": set(result.history[-1]) - {"epoch"},
        "test": set(result.test_metrics),
        "size": set(result.model_stats),
        "cost": set(result.cost),
    }
    for kind, names in produced.items():
        registered = {m.name for m in METRICS.values() if m.kind == kind}
        assert names - registered == set(), f"produced but not in hvit_sweeps.metrics ({kind})"
        assert registered - names == set(), f"registered but never produced ({kind})"


def test_lists_derive_from_the_table() -> None:
    assert set(metrics.objectives("epoch")) <= set(metrics.epoch_metrics())
    assert "lr" not in metrics.objectives() and "lr" not in metrics.summarised()
    for name in metrics.monitors():  # the Literal the config and --monitor offer, held to the table
        assert metrics.metric(name).kind == "epoch" and metrics.metric(name).direction is not None
    assert metrics.tracked_metric("val_acc1") == "best/val_acc1"
    assert metrics.tracked_metric("params_m") == "model/params_m"
    assert metrics.tracked_metric("latency_ms") == "cost/latency_ms"
    assert list(metrics.curve_panels()) == ["loss", "accuracy", "learning rate"]
    drawn = {name for names in metrics.curve_panels().values() for name in names}
    assert drawn <= set(metrics.epoch_metrics())  # a panel draws only what the loop reports
    with pytest.raises(KeyError, match="not a registered metric"):
        metrics.metric("no_such")


def test_a_monitor_outside_the_table_is_refused() -> None:
    from hvit_sweeps.errors import HvitError

    with pytest.raises(HvitError, match="monitor"):
        build_config({"monitor": "train_loss"})
    assert build_config({"monitor": "val_loss"}).monitor_mode == "min"
    assert build_config({"monitor": "val_acc5"}).monitor_mode == "max"


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("val_acc1", 0.25, "25.00%"),
        ("best/val_acc1", 0.25, "25.00%"),
        ("seen_val_acc1", 0.5, "50.00%"),
        ("test_acc5", 0.5, "50.00%"),
        ("lr", 0.001, "1.00e-03"),
        ("images_per_second", 12345.6, "12,346"),
        ("cost/train_images_per_second", 12345.6, "12,346"),
        ("params_m", 1.23456, "1.235"),
        ("val_loss", 0.123456, "0.1235"),
        ("epoch", 3, "3"),
        ("status", "complete", "complete"),
    ],
)
def test_format_metric(name: str, value: object, shown: str) -> None:
    assert format_metric(name, value) == shown
