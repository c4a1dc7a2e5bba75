"""hvit-sweep: Optuna sweeps of a hierarchical Vision Transformer, tracked in MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
