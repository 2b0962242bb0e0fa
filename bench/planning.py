"""What planning a trial costs as the grid and the history grow: grid and coarse-to-fine on a
grid of 10^5, 10^8 and 10^12 points with 1,000 and 10,000 trials done, beside random search
(which plans without a grid) in the same run.

A claim asks the strategy for the next trial given every trial so far (as the trial store does
under its lock). "first" is the first claim of a process that resumes the study (each trial's
place in the grid's order found once); "claim" the median of the claims after it. Run with
``make bench``.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

from rich.console import Console
from rich.table import Table

from hpo import SearchSpace, TrialRecord, TrialState
from hpo.strategies import CoarseToFineStrategy, GridStrategy, RandomStrategy


def space_of(points: int, params: int) -> SearchSpace:
    return SearchSpace.model_validate({
        "name": f"grid-{points}^{params}", "metric": "loss", "direction": "minimize",
        "params": {f"p{i}": {"type": "float", "low": 1e-6, "high": 1.0, "log": True, "grid_points": points}
                   for i in range(params)},
    })


def history_of(strategy, space: SearchSpace, done: int, budget: int) -> list[TrialRecord]:
    history: list[TrialRecord] = []
    while len(history) < done:
        suggestion = strategy.suggest(space, history, budget)
        loss = sum(math.log10(v) ** 2 for v in suggestion.params.values())
        history.append(TrialRecord(len(history), suggestion.params, TrialState.COMPLETE, loss, suggestion.stage))
    return history


def timed(make, space: SearchSpace, done: int, claims: int) -> tuple[float, float]:
    """(first claim, median claim) in ms, for a fresh strategy resuming ``done`` trials."""
    budget = done + claims + 1
    history = history_of(make(), space, done, budget)
    strategy = make()
    started = time.perf_counter()
    suggestion = strategy.suggest(space, history, budget)
    first = time.perf_counter() - started
    times = []
    for _ in range(claims):
        history.append(TrialRecord(len(history), suggestion.params, TrialState.RUNNING, stage=suggestion.stage))
        started = time.perf_counter()
        suggestion = strategy.suggest(space, history, budget)
        times.append(time.perf_counter() - started)
    return 1000 * first, 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--done", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--claims", type=int, default=50)
    args = parser.parse_args()
    strategies = {
        "random": lambda: RandomStrategy(seed=0),
        "grid": lambda: GridStrategy(seed=0),
        "coarse-to-fine": lambda: CoarseToFineStrategy(seed=0, grid_points=10),
    }
    table = Table(title=f"Planning one trial, ms ({platform.processor() or platform.machine()}, "
                        f"Python {platform.python_version()})")
    for column in ("grid points", "trials done", "strategy", "first", "claim", "x random"):
        table.add_column(column, justify="right")
    for points, params in ((10, 5), (10, 8), (100, 6)):
        space = space_of(points, params)
        for done in args.done:
            reference = None
            for name, make in strategies.items():
                first, claim = timed(make, space, done, args.claims)
                reference = reference or claim
                table.add_row(f"{points}^{params}", f"{done:,}", name, f"{first:.2f}", f"{claim:.3f}",
                              f"{claim / reference:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
