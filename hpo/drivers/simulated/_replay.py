"""Objectives for the simulated driver: recorded curves replayed, and any generator objective
run to its end on a real driver."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

from hpo.spaces import direction_sign


class ReplayedCurves:
    """Learning curves recorded from real trials, replayed: a claimed configuration replays the
    recorded one nearest to it (numbers compared on a log scale, each over its recorded range),
    one step per yield of the seconds it took; the result is its best step by ``metric``, as an
    objective that keeps its best epoch returns.

    Each record: ``{"params": {...}, "steps": [[step, seconds, {"val_loss": ...}], ...]}``.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], metric: str, direction: str = "minimize") -> None:
        if not records:
            raise ValueError("no recorded curves to replay")
        self.records = list(records)
        self.metric = metric
        self.sign = direction_sign(direction)
        names = self.records[0]["params"]
        self._spans = {name: _span([_scaled(r["params"][name]) for r in self.records]) for name in names}

    def nearest(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """The record whose configuration is nearest ``params``."""
        return min(self.records, key=lambda record: self._distance(record["params"], params))

    def __call__(self, params: Mapping[str, Any], trial: Any) -> Generator[float, None, dict[str, float]]:
        record = self.nearest(params)
        reported: list[dict[str, float]] = []
        for step, seconds, metrics in record["steps"]:
            yield float(seconds)
            reported.append(dict(metrics))
            trial.report(int(step), **metrics)
        finite = [m for m in reported if math.isfinite(m.get(self.metric, math.nan))]
        return min(finite, key=lambda m: self.sign * m[self.metric]) if finite else {self.metric: math.nan}

    def _distance(self, recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> float:
        total = 0.0
        for name, span in self._spans.items():
            a, b = _scaled(recorded[name]), _scaled(asked.get(name, recorded[name]))
            if isinstance(a, float) and isinstance(b, float):
                total += ((a - b) / span) ** 2
            else:
                total += float(a != b)
        return total


def _scaled(value: Any) -> Any:
    """Positive numbers on a log scale, other numbers as they are, anything else as a label."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return math.log10(value) if value > 0 else float(value)


def _span(values: list[Any]) -> float:
    numbers = [v for v in values if isinstance(v, float)]
    return (max(numbers) - min(numbers)) or 1.0 if numbers else 1.0


def run_to_end(objective: Callable[..., Any]) -> Callable[..., Any]:
    """A generator objective as any driver runs it: its steps one after another, no time simulated."""

    @functools.wraps(objective)
    def plain(params: Any, trial: Any) -> Any:
        returned = objective(params, trial)
        if not inspect.isgenerator(returned):
            return returned
        try:
            while True:
                next(returned)
        except StopIteration as end:
            return end.value

    return plain
