"""Random search: seeded, reproducible draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hpo.spaces import SearchSpace
from hpo.strategies._base import BaseStrategy, Suggestion
from hpo.trial import TrialRecord


class RandomStrategy(BaseStrategy):
    """Independent uniform draws on each parameter's scale (log-uniform where log-scaled).

    Trial ``i`` draws from a generator seeded with ``(seed, i)``: the same seed gives the
    same trials whatever the order in which they run or resume.
    """

    name = "random"

    def suggest(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int
    ) -> Suggestion | None:
        rng = np.random.default_rng([self.seed, len(history)])
        return Suggestion(space.sample(rng))

    def suggest_like(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int, like: dict[str, Any]
    ) -> Suggestion | None:
        """Trial ``i``'s own draws, but for ``like``'s values: a population's shape parameters
        are drawn once, by its first trial, and the rest per trial, so every parameter keeps its
        distribution."""
        drawn = space.sample(np.random.default_rng([self.seed, len(history)]))
        return Suggestion({name: like.get(name, value) for name, value in drawn.items()})
