"""Coarse-to-fine: a coarse stage over the whole space, then stages narrowed around the best."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpo.spaces import CategoricalParam, IntParam, SearchSpace
from hpo.strategies._base import WAIT, BaseStrategy, Suggestion, params_key
from hpo.strategies._grid import GridStrategy
from hpo.trial import TrialRecord, TrialState


class CoarseToFineStrategy(BaseStrategy):
    """A coarse stage over the whole space, then stages narrowed around the best trials.

    The coarse stage is the space's grid when it fits in ``coarse_share`` of the budget,
    otherwise random draws. Each later stage draws at random from a region built from the
    top ``top_fraction`` of the completed trials of the stage before: on each parameter's
    scale (log where log-scaled), the span of those trials plus a margin, at least
    ``min_width`` of the previous width. Where the best trial sits on an edge of the
    previous region, that side is widened again instead, as far as the space allows.
    Categorical parameters keep the choices the top trials used. A stage starts only once
    every trial of the stage before has finished.
    """

    name = "coarse-to-fine"

    def __init__(
        self,
        seed: int = 0,
        stages: int = 3,
        coarse_share: float = 0.6,
        top_fraction: float = 0.25,
        min_width: float = 0.25,
        grid_points: int = 3,
    ) -> None:
        super().__init__(seed)
        if stages < 1:
            raise ValueError(f"{stages=} must be >= 1")
        if not 0 < coarse_share <= 1:
            raise ValueError(f"{coarse_share=} must be in (0, 1]")
        if not 0 < top_fraction <= 1:
            raise ValueError(f"{top_fraction=} must be in (0, 1]")
        if not 0 < min_width <= 1:
            raise ValueError(f"{min_width=} must be in (0, 1]")
        self.stages = stages
        self.coarse_share = coarse_share
        self.top_fraction = top_fraction
        self.min_width = min_width
        self.grid_points = grid_points
        self._grid = GridStrategy(seed, grid_points)
        self._regions: dict[tuple[int, tuple[int, ...]], tuple[SearchSpace, SearchSpace]] = {}

    def stage_budgets(self, space: SearchSpace, n_trials: int) -> tuple[list[int], bool]:
        """Trials per stage, and whether the coarse stage is the grid."""
        grid_size = len(self._grid.grid(space)[0])
        use_grid = self.stages > 1 and grid_size <= self.coarse_share * n_trials
        coarse = grid_size if use_grid else max(1, math.ceil(n_trials / self.stages))
        coarse = min(coarse, n_trials)
        rest, later = n_trials - coarse, self.stages - 1
        return [coarse] + [rest // later + (i < rest % later) for i in range(later)], use_grid

    def suggest(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int
    ) -> Suggestion | None:
        budgets, use_grid = self.stage_budgets(space, n_trials)
        index = len(history)
        stage = next((s for s, end in enumerate(np.cumsum(budgets)) if index < end), None)
        if stage is None:
            return None
        if stage == 0 and use_grid:
            coarse = [t for t in history if t.stage == 0]
            point = self._grid.suggest(space, coarse, n_trials)
            return Suggestion(point.params, 0) if point else None
        if any(t.stage == stage - 1 and not t.finished for t in history):
            return WAIT  # a stage starts when the stage before has finished
        region = self.region(space, history, stage)
        rng = np.random.default_rng([self.seed, index])
        return Suggestion(region.sample(rng), stage)

    def suggest_like(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int, like: dict[str, Any]
    ) -> Suggestion | None:
        """As ``suggest``, inside the same stage: the coarse grid's next point of the group, or
        the stage's own draw for the rest of the parameters."""
        suggestion = self.suggest(space, history, n_trials)
        if suggestion is None or suggestion is WAIT:
            return suggestion
        if suggestion.stage == 0 and self.stage_budgets(space, n_trials)[1]:
            point = self._grid.suggest_like(space, [t for t in history if t.stage == 0], n_trials, like)
            return Suggestion(point.params, 0) if point else None
        return Suggestion({name: like.get(name, value) for name, value in suggestion.params.items()}, suggestion.stage)

    def region(self, space: SearchSpace, history: Sequence[TrialRecord], stage: int) -> SearchSpace:
        """The sub-space stage ``stage`` draws from, rebuilt from the history of earlier stages
        (once per stage: those trials have all finished when it starts)."""
        complete = [t for t in history if t.stage < stage and t.state is TrialState.COMPLETE]
        key = (stage, tuple(t.number for t in complete))
        cached = self._regions.get(key)
        if cached is not None and cached[0] is space:
            return cached[1]
        region = space
        for previous in range(stage):
            region = self.narrow(space, region, [t for t in complete if t.stage == previous])
        self._regions = {key: (space, region)}
        return region

    def __getstate__(self) -> dict[str, Any]:  # the cache is made again where it is unpickled
        return {**self.__dict__, "_regions": {}}

    def narrow(
        self, space: SearchSpace, region: SearchSpace, trials: Sequence[TrialRecord]
    ) -> SearchSpace:
        """``region`` narrowed around the best of ``trials``, within the bounds of ``space``."""
        if not trials:
            return region
        sign = space.sign
        ranked = sorted(trials, key=lambda t: (sign * t.value, params_key(t.params)))
        top = ranked[: max(2, math.ceil(self.top_fraction * len(ranked)))]
        params = {}
        for name, param in region.params.items():
            values = [t.params[name] for t in top if name in t.params]
            if not values:
                params[name] = param
            elif isinstance(param, CategoricalParam):
                kept = [c for c in param.choices if c in values]
                params[name] = param.model_copy(update={"choices": kept, "grid": None})
            else:
                best = next(t.params[name] for t in top if name in t.params)
                params[name] = self._narrow_numeric(space.params[name], param, values, best)
        return region.model_copy(update={"params": params})

    def _narrow_numeric(self, full, param, values, best):  # type: ignore[no-untyped-def]
        lo, hi = param.to_unit(param.low), param.to_unit(param.high)
        full_lo, full_hi = full.to_unit(full.low), full.to_unit(full.high)
        width = hi - lo
        units = [param.to_unit(v) for v in values]
        new_lo, new_hi = min(units) - 0.1 * width, max(units) + 0.1 * width
        missing = self.min_width * width - (new_hi - new_lo)
        if missing > 0:
            new_lo, new_hi = new_lo - missing / 2, new_hi + missing / 2
        new_lo, new_hi = max(new_lo, lo), min(new_hi, hi)
        best_u, edge = param.to_unit(best), 0.05 * width
        if best_u - lo <= edge:
            new_lo = max(full_lo, lo - width / 2)
        if hi - best_u <= edge:
            new_hi = min(full_hi, hi + width / 2)
        low, high = param.from_unit(new_lo), param.from_unit(new_hi)
        step = param.step or (1 if isinstance(param, IntParam) else None)
        if step is not None:  # keep the region on the space's own lattice of steps
            low = full.low + math.floor((low - full.low) / step + 1e-9) * step
            high = full.low + math.ceil((high - full.low) / step - 1e-9) * step
        low, high = max(full.low, low), min(full.high, high)
        if isinstance(param, IntParam):
            low, high = int(low), int(high)
        return param.model_copy(update={"low": low, "high": high, "grid": None})
