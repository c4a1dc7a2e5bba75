"""Pruning on the first objective of a multi-objective study, where Optuna cannot.

Optuna refuses ``trial.report`` in multi-objective studies (optuna#3450), so its
pruners never see an accuracy-against-cost study's epochs. Here each trial keeps
its per-epoch first-objective values in a user attribute (:data:`ATTR_CURVE`),
and :func:`percentile_rule` applies the rule of Optuna's ``MedianPruner`` /
``PercentilePruner`` to them: at epoch ``e`` (from ``n_warmup_steps`` on, once
``n_startup_trials`` trials have completed), a trial whose best value so far is
worse than the median (or the pruner's percentile) of the completed trials'
values at epoch ``e`` stops. It ends PRUNED, so it has no values and never joins
the Pareto front.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from hvit_sweeps.search import PrunerSpec, RankPrunerSpec

__all__ = ["ATTR_CURVE", "percentile_rule", "prune_first_objective"]

ATTR_CURVE = "hvit.first_objective_by_epoch"  # {"1": value, "2": value, ...}: JSON keys are strings


def percentile_rule(
    own: Sequence[float], others_at_epoch: Sequence[float], *, maximize: bool, percentile: float = 50.0
) -> bool:
    """Prune when the trial's best so far is worse than the ``percentile`` of the others at this epoch.

    As Optuna's PercentilePruner: keep the top ``percentile`` percent, so for a
    maximised value the cut is the (100 - percentile)th percentile of the others.
    """
    if not own or not others_at_epoch:
        return False
    best = max(own) if maximize else min(own)
    cut = float(np.percentile(others_at_epoch, 100 - percentile if maximize else percentile))
    return best < cut if maximize else best > cut


def prune_first_objective(
    trial: optuna.Trial, pruner: PrunerSpec, *, epoch: int, value: float, maximize: bool
) -> str | None:
    """Record ``value`` as the trial's epoch ``epoch``, and say why it should stop, if it should."""
    curve = {**trial.user_attrs.get(ATTR_CURVE, {}), str(epoch): value}
    trial.set_user_attr(ATTR_CURVE, curve)
    if not isinstance(pruner, RankPrunerSpec) or epoch < pruner.n_warmup_steps:
        return None
    complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < pruner.n_startup_trials:
        return None
    key = str(epoch)
    others = [t.user_attrs[ATTR_CURVE][key] for t in complete if key in t.user_attrs.get(ATTR_CURVE, {})]
    if not percentile_rule(list(curve.values()), others, maximize=maximize, percentile=pruner.kept_percentile):
        return None
    return (
        f"pruned on the first objective by the {pruner.type} rule at epoch {epoch}: best so far "
        f"{max(curve.values()) if maximize else min(curve.values()):.4g} against {len(others)} complete trial(s)"
    )
