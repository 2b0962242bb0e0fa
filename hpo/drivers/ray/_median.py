"""hpo's median rule on the Ray driver, decided in the trial's actor.

The rule is the Optuna driver's (Optuna's median pruner): after the warm-up, a trial stops
when its best value so far is worse than the median of the complete trials' values at the
same step, once enough trials are complete. Those medians are a small table, by step: the
driver keeps each stage's up to date as trials end and hands a trial its table with its
claim, so that the actor decides each report alone — its reports need not be Tune results
one by one (each a round trip to Tune's controller), and the search prunes alike on both
drivers. A trial that runs long asks a board (a small actor the driver starts then) for the
newest table every ``REFRESH_S``, as the Optuna driver reads what other processes ended.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from typing import Any

from hpo._plan import SearchPlan
from hpo._trial import TrialPruned, TrialRecord, TrialState, median_detail

REFRESH_S = 2.0
"""How old a running trial's table may grow before it asks the board for a newer one."""

Table = list[tuple[int, float, int]]
"""Each step the rule may judge: the complete trials' median there, and how many reported it."""


class MedianTables:
    """Driver side: each stage's table, from the trials the store has seen finish.

    ``store`` is the trial store the driver claims from: its claims read what other processes
    ended, and its ``finished_since`` hands over what changed without a read of its own."""

    def __init__(self, plan: SearchPlan, store: Any) -> None:
        self.store = store
        self.by_stage = plan.pruning.by_stage
        self.startup = max(1, plan.pruning.warmup_trials)
        self.warmup = plan.pruning.steps(plan.space.epochs)
        self.board_name = f"hpo-medians-{uuid.uuid4().hex[:12]}"
        self._seen = 0
        self._complete: dict[int | None, int] = {}
        self._values: dict[int | None, dict[int, list[float]]] = {}
        self._tables: dict[int | None, Table] = {}
        self._board: Any = None

    def key(self, stage: int) -> int | None:
        """Which trials a trial of ``stage`` is compared with: its stage's, or all (None)."""
        return stage if self.by_stage else None

    def table(self, stage: int) -> Table:
        """The table for a trial of ``stage`` as the trials finished so far make it."""
        self._update()
        return self.table_of(self.key(stage))

    def trial_ended(self) -> None:
        """A trial ended here: the board, once there is one, gets the tables it changed."""
        changed = self._update()
        if self._board is not None:
            for key in changed:
                self._board.publish.remote(key, self.table_of(key))

    def trial_runs_long(self) -> None:
        """A trial has run past a forwarding interval: start the board it will ask from then on."""
        if self._board is not None:
            return
        import ray

        board = ray.remote(num_cpus=0)(MedianBoard)
        self._board = board.options(name=self.board_name).remote()
        self._update()
        for key in list(self._values):
            self._board.publish.remote(key, self.table_of(key))

    def close(self) -> None:
        if self._board is not None:
            import ray

            ray.kill(self._board)
            self._board = None

    def table_of(self, key: int | None) -> Table:
        """The table of the trials compared under ``key``, as last taken in."""
        if key not in self._tables:
            self._tables[key] = self._compute(key)
        return self._tables[key]

    def _update(self) -> set[int | None]:
        """Take in the complete trials the store learnt of since the last look."""
        finished = self.store.finished_since(self._seen)
        self._seen += len(finished)
        changed: set[int | None] = set()
        for record in finished:
            if record.state is TrialState.COMPLETE:
                changed.add(self._add(record))
        return changed

    def _add(self, record: TrialRecord) -> int | None:
        key = self.key(record.stage)
        self._complete[key] = self._complete.get(key, 0) + 1
        steps = self._values.setdefault(key, {})
        seen: set[int] = set()
        for step, value in record.curve:
            if step not in seen:  # Optuna keeps a step's first value
                seen.add(step)
                steps.setdefault(int(step), []).append(float(value))
        self._tables.pop(key, None)
        return key

    def _compute(self, key: int | None) -> Table:
        """Optuna's percentile rule's threshold (``np.nanpercentile`` at 50) at each step past
        the warm-up, once ``startup`` trials are complete; an empty table judges nothing."""
        import numpy as np

        if self._complete.get(key, 0) < self.startup:
            return []
        table: Table = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a step where every value is NaN
            for step, values in sorted(self._values.get(key, {}).items()):
                if step >= self.warmup:
                    table.append((step, float(np.nanpercentile(np.array(values, dtype=float), 50.0)), len(values)))
        return table


class MedianBoard:
    """A Ray actor holding the newest table of each stage, for trials that run long."""

    def __init__(self) -> None:
        self.tables: dict[int | None, Table] = {}

    def publish(self, key: int | None, table: Table) -> None:
        self.tables[key] = table

    def table(self, key: int | None) -> Table | None:
        return self.tables.get(key)


_BOARDS: dict[str, Any] = {}
"""The boards this actor process found, by name."""


class MedianRule:
    """Actor side: whether a trial stops at a report, as Optuna's median pruner decides it
    from ``table`` (``MedianTables.table``); asks the board ``board_name`` for a newer table
    every ``REFRESH_S`` while the trial runs."""

    def __init__(self, table: Table, key: int | None, direction: str, board_name: str) -> None:
        self.key = key
        self.direction = direction
        self.board_name = board_name
        self._thresholds = _thresholds(table)
        self._fetched = time.monotonic()
        self._best = math.nan

    def __call__(self, step: int, value: float) -> TrialPruned | None:
        if not math.isnan(value):
            better = value > self._best if self.direction == "maximize" else value < self._best
            self._best = value if math.isnan(self._best) or better else self._best
        if time.monotonic() - self._fetched >= REFRESH_S:
            self._refresh()
        if step not in self._thresholds:
            return None  # warm-up, too few trials complete, or no complete trial reached this step
        median, count = self._thresholds[step]
        best = self._best
        if not math.isnan(best) and (math.isnan(median) or (best >= median if self.direction == "maximize"
                                                             else best <= median)):
            return None
        return TrialPruned("median", median_detail(step, best, median, count, self.direction))

    def _refresh(self) -> None:
        import ray

        self._fetched = time.monotonic()
        try:
            if self.board_name not in _BOARDS:
                _BOARDS[self.board_name] = ray.get_actor(self.board_name)
            table = ray.get(_BOARDS[self.board_name].table.remote(self.key), timeout=REFRESH_S)
        except Exception:  # no board yet (the driver starts it once a trial runs long), or it is gone
            _BOARDS.pop(self.board_name, None)
            return
        if table is not None:
            self._thresholds = _thresholds(table)


def _thresholds(table: Table) -> dict[int, tuple[float, int]]:
    return {int(step): (float(median), int(count)) for step, median, count in table}
