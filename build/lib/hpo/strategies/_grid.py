"""Grid search: every point of the space's grid once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpo._trial import TrialRecord
from hpo.spaces import SearchSpace
from hpo.strategies._base import BaseStrategy, Suggestion, params_key


class GridStrategy(BaseStrategy):
    """Every point of the space's grid exactly once, in a seeded order.

    A parameter's grid is its explicit ``grid`` values, or ``grid_points`` (default
    ``points``) values spaced evenly on its scale. Points already in the history, running
    ones included, are never suggested again, so a resumed search picks up the rest.
    """

    name = "grid"

    def __init__(self, seed: int = 0, points: int = 3) -> None:
        super().__init__(seed)
        if points < 1:
            raise ValueError(f"{points=} must be >= 1")
        self.points = points

    def ordered_grid(self, space: SearchSpace) -> list[dict]:
        grid = space.grid(self.points)
        order = np.random.default_rng(self.seed).permutation(len(grid))
        return [grid[i] for i in order]

    def suggest(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int
    ) -> Suggestion | None:
        done = {params_key(trial.params) for trial in history}
        for point in self.ordered_grid(space):
            if params_key(point) not in done:
                return Suggestion(point)
        return None
