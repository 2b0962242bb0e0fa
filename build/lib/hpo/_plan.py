"""What a search is (``SearchPlan``, saved with its study) and what it found (``SearchResult``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hpo._errors import HpoError
from hpo._trial import TrialRecord, TrialState
from hpo.spaces import SearchSpace
from hpo.strategies import Strategy, strategy_from_spec, strategy_spec

PRUNERS = ("none", "median", "successive-halving", "hyperband")


@dataclass(frozen=True)
class SearchPlan:
    """Everything about what to search, validated up front; saved with the study, so that any
    process that joins the search continues the same plan (the strategy with its settings)."""

    space: SearchSpace
    strategy: Strategy
    n_trials: int
    study_name: str
    objective_name: str
    driver_name: str = "optuna"
    pruner: str = "none"
    seed: int = 0
    divergence_guard: bool = True

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise HpoError(f"--trials: must be at least 1, got {self.n_trials}")
        if self.pruner not in PRUNERS:
            raise HpoError(f"--pruner: unknown pruner {self.pruner!r} (choose from {', '.join(PRUNERS)})")

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space.model_dump(mode="json"), "strategy": strategy_spec(self.strategy),
            "n_trials": self.n_trials, "study_name": self.study_name, "objective": self.objective_name,
            "driver": self.driver_name, "pruner": self.pruner, "seed": self.seed,
            "divergence_guard": self.divergence_guard,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchPlan:
        return cls(
            space=SearchSpace.model_validate(data["space"]), strategy=strategy_from_spec(data["strategy"]),
            n_trials=data["n_trials"], study_name=data["study_name"], objective_name=data["objective"],
            driver_name=data["driver"], pruner=data["pruner"], seed=data["seed"],
            divergence_guard=data["divergence_guard"],
        )


@dataclass
class SearchResult:
    """The trials of a search's budget, its best one, and the best one's test score.

    A trial lost with its process (or to Ctrl-C) is in MLflow, failed, but not here: its
    configuration ran again, and that retry is.
    """

    space: SearchSpace
    trials: list[TrialRecord]
    study_name: str
    tracking_uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.space.metric

    @property
    def best(self) -> TrialRecord | None:
        complete = [t for t in self.trials if t.state is TrialState.COMPLETE and t.value is not None]
        if not complete:
            return None
        sign = 1 if self.space.direction == "minimize" else -1
        return min(complete, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]

    @property
    def best_params(self) -> dict[str, Any]:
        return {**self.space.fixed, **self.best.params} if self.best else {}

    @property
    def best_value(self) -> float:
        return self.best.value if self.best and self.best.value is not None else math.nan

    def count(self, state: TrialState) -> int:
        return sum(t.state is state for t in self.trials)
