"""A sampler whose randomness is keyed to each trial's number, so no process replays another's draws.

Apart from :mod:`hvit_sweeps.search` because it subclasses Optuna's sampler: checking a
study file must not import Optuna (a flag mistake is answered before it loads).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededSampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """A sampler seed for trial ``number`` of a study seeded ``seed``: stable, and apart for every trial."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # numpy takes seeds below 2**32


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates each trial to a fresh sampler seeded from (study seed, trial number).

    A sampler seeded once per process replays the study's first draws in every new
    process: a second `run`, `run --resume`, each worker (in containers their pids
    are equal too). The trial number is unique in the storage, across processes and
    hosts, so keying the randomness to it gives every trial draws of its own, while
    one `run` from an empty study stays reproducible. The samplers keep no state
    between trials that matters: TPE, GP, CMA-ES and NSGA-II read the history from
    the storage.
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], *, seed: int) -> None:
        self._factory, self._seed = factory, seed
        self.inner = factory(trial_seed(seed, 0))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Optuna calls this first for every trial (also a popped WAITING one), before any sampling.
        self.inner = self._factory(trial_seed(self._seed, trial.number))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
