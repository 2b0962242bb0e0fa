"""Grid search: every point of the space's grid once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpo.spaces import Grid, SearchSpace, Shuffle
from hpo.strategies._base import BaseStrategy, Suggestion, shares
from hpo.trial import TrialRecord


class GridStrategy(BaseStrategy):
    """Every point of the space's grid exactly once, in a seeded order.

    A parameter's grid is its explicit ``grid`` values, or ``grid_points`` (default
    ``points``) values spaced evenly on its scale. Points already in the history, running
    ones included, are never suggested again, so a resumed search picks up the rest.

    The grid is never materialised: its points are numbered (``Grid``) and visited in a seeded
    permutation of the numbers (``Shuffle``); a claim costs the same with 10 points as with
    10^12, and grows only with the trials done (each one's place in the order is found once).
    """

    name = "grid"
    group_share = None

    def __init__(self, seed: int = 0, points: int = 3) -> None:
        super().__init__(seed)
        if points < 1:
            raise ValueError(f"{points=} must be >= 1")
        self.points = points
        self._planned: tuple[SearchSpace, Grid, Shuffle] | None = None
        self._places: dict[int, tuple[dict[str, Any], int | None]] = {}  # trial number -> (params, place)

    def __getstate__(self) -> dict[str, Any]:  # the caches are made again where it is unpickled
        return {**self.__dict__, "_planned": None, "_places": {}}

    def max_trials(self, space: SearchSpace) -> int:
        return len(self.grid(space)[0])

    def grid(self, space: SearchSpace) -> tuple[Grid, Shuffle]:
        """The numbered grid of ``space`` and its seeded order (made once per space)."""
        if self._planned is None or self._planned[0] is not space:
            grid = Grid(space, self.points)
            self._planned, self._places = (space, grid, Shuffle(len(grid), self.seed)), {}
        return self._planned[1], self._planned[2]

    def suggest(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int
    ) -> Suggestion | None:
        grid, order = self.grid(space)
        taken = {self._place(trial, grid, order) for trial in history}
        taken.discard(None)
        place = len(taken)
        if taken and max(taken) != place - 1:  # a gap: a point lost earlier runs again first
            place = next(p for p in range(len(taken) + 1) if p not in taken)
        return Suggestion(grid.point(order[place])) if place < len(grid) else None

    def suggest_like(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int, like: dict[str, Any]
    ) -> Suggestion | None:
        """The first point in the seeded order, not yet taken, with ``like``'s values: a
        population's rows are refilled from its own group (None once the group has no point
        left within ``LOOK_AHEAD`` places)."""
        grid, order = self.grid(space)
        taken = {self._place(trial, grid, order) for trial in history}
        for place in range(len(grid)):
            if place > len(taken) + self.LOOK_AHEAD:
                return None
            if place not in taken and shares(point := grid.point(order[place]), like):
                return Suggestion(point)
        return None

    LOOK_AHEAD = 10_000
    """How far past the points taken a group's next point is looked for."""

    def _place(self, trial: TrialRecord, grid: Grid, order: Shuffle) -> int | None:
        """Where the trial's point comes in the seeded order (None off the grid), found once."""
        known = self._places.get(trial.number)
        if known is not None and known[0] is trial.params:
            return known[1]
        number = grid.number(trial.params)
        place = None if number is None else order.position(number)
        self._places[trial.number] = (trial.params, place)
        return place
