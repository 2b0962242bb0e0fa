"""What a search is (``SearchPlan``, saved with its study) and what it found (``SearchResult``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.spaces import Pruning, SearchSpace
from hpo.strategies import Strategy, strategy_from_spec, strategy_spec
from hpo.trial import TrialRecord, TrialState, by_state, ranking, trials_text

if TYPE_CHECKING:
    import pandas

PER_MEMBER = ("lr", "weight_decay", "momentum", "dropout", "patience", "optimizer", "schedule", "epochs")
"""The training hyperparameters the members of one population may differ in (``hpo.population``
trains each member with its own). The batch size, and what the model is built from (width,
depth...), group a population: its members share them."""

TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "weight_decay": 0.0, "dropout": 0.1, "batch_size": 64, "optimizer": "adamw", "momentum": 0.9,
    "schedule": "cosine", "epochs": 25, "patience": 5,
}
"""The training hyperparameters of the built-in procedure (``hpo.population.fit``) that a
trial's parameters leave out."""


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
    pruning: Pruning = field(default_factory=Pruning)
    seed: int = 0
    divergence_guard: bool = True
    trial_timeout: float | None = None
    """Seconds a trial may run (the space's ``timeout`` unless given)."""

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def shape_params(self) -> list[str]:
        """The searched parameters the members of a population share: all but ``PER_MEMBER``."""
        return [name for name in self.space.params if name not in PER_MEMBER]

    @property
    def pruner(self) -> str:
        """The pruner's name (``none`` when trials run to their end)."""
        return self.pruning.pruner

    @property
    def runnable_trials(self) -> int:
        """The trials the search can run: its budget, or what the strategy has where that is
        fewer (a grid's points)."""
        most = self.strategy.max_trials(self.space)
        return self.n_trials if most is None else min(most, self.n_trials)

    def short_of_budget(self) -> str | None:
        """Why the search will run fewer trials than its budget, where it will."""
        if (runnable := self.runnable_trials) < self.n_trials:
            return (f"{self.space.name}: its grid has {runnable} points, fewer than the {self.n_trials} trials of the "
                    f"budget: the search ends after them (more grid values or grid_points widen it)")
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "space": self.space.model_dump(mode="json"), "strategy": strategy_spec(self.strategy),
            "strategy_name": self.strategy_name,
            "n_trials": self.n_trials, "study_name": self.study_name, "objective": self.objective_name,
            "driver": self.driver_name, "pruning": self.pruning.model_dump(), "seed": self.seed,
            "divergence_guard": self.divergence_guard, "trial_timeout": self.trial_timeout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchPlan:
        return cls(
            space=SearchSpace.model_validate(data["space"]), strategy=strategy_from_spec(data["strategy"]),
            n_trials=data["n_trials"], study_name=data["study_name"], objective_name=data["objective"],
            driver_name=data["driver"], pruning=Pruning.model_validate(data["pruning"]), seed=data["seed"],
            divergence_guard=data["divergence_guard"], trial_timeout=data.get("trial_timeout"),
        )


def differences(saved: dict[str, Any], plan: SearchPlan) -> list[tuple[str, str, str]]:
    """How ``plan`` differs from the plan a study was saved with (``to_json``), in what would
    change the meaning of its trials: ``(argument, as saved, as asked)`` for the driver, the
    strategy, the seed and the pruner (the budget may grow: that is resuming)."""
    asked = plan.to_json()
    found = []
    for argument, key in (("driver", "driver"), ("strategy", "strategy_name"), ("seed", "seed")):
        if key in saved and saved[key] != asked[key]:
            found.append((argument, str(saved[key]), str(asked[key])))
    if "pruning" in saved and saved["pruning"] != asked["pruning"]:
        was, now = Pruning.model_validate(saved["pruning"]), plan.pruning
        if was.pruner != now.pruner:
            found.append(("pruner", was.pruner, now.pruner))
        else:
            changed = [k for k in Pruning.model_fields if getattr(was, k) != getattr(now, k)]
            found += [(k, str(getattr(was, k)), str(getattr(now, k))) for k in changed]
    if not found and saved.get("strategy") not in (None, asked["strategy"]):
        settings = saved["strategy"].get("settings", {})
        changed = [k for k, v in asked["strategy"]["settings"].items() if settings.get(k, v) != v]
        found += [("strategy", f"{k}={settings[k]}", f"{k}={asked['strategy']['settings'][k]}") for k in changed]
    return found


def pruning_for(space: SearchSpace, pruner: str | Pruning, warmup_steps: int | None = None,
                warmup_trials: int | None = None) -> Pruning:
    """The search's pruning: the one given, or the pruner named with the space's warm-up (and any
    warm-up given overriding it); the names and numbers are checked as settings."""
    if isinstance(pruner, Pruning):
        return pruner
    overrides = {"pruner": pruner, "warmup_steps": warmup_steps, "warmup_trials": warmup_trials}
    return space.pruning.model_copy(update={k: v for k, v in overrides.items() if v is not None})


_COLUMNS = ("number", "value", "state", "duration", "params", "metrics", "stage", "reason", "run_id")
"""The column groups of ``SearchResult.trials_dataframe``."""
_OPTUNA_STATES = {**{state.name: state for state in TrialState}, "FAIL": TrialState.FAILED}
"""hpo's trial states by their names in Optuna's ``TrialState`` (its ``WAITING`` has none here)."""


@dataclass
class SearchResult:
    """The trials of a search's budget, its best one, and the best one's test score.

    A trial lost with its process (or to Ctrl-C) is in MLflow, failed, but not here: its
    configuration ran again, and that retry is.
    """

    space: SearchSpace
    trials: list[TrialRecord]
    study_name: str
    storage: str = ""
    """The trial store's URL: ``optuna.load_study(study_name=..., storage=...)`` opens the study
    (optuna-dashboard, Optuna's plots)."""
    tracking_uri: str = ""
    experiment_id: str = ""
    experiment: str = ""
    """The MLflow experiment's name."""
    view_key: str = ""
    """The search's saved view in the MLflow UI (``viewStateShareKey``)."""
    parent_run_id: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)
    tracked: bool = True
    """Whether MLflow holds all of it; if not (the tracking server was down at the end), the next
    run of the search writes what is missing."""
    stopped: str = ""
    """Why this run stopped before the budget (its ``timeout``); empty if it did not."""
    report: Path | None = None
    """The search's report (``report.html``, its plots beside it), written as the search ends."""

    @property
    def metric(self) -> str:
        return self.space.metric

    @property
    def best(self) -> TrialRecord | None:
        return next((t for t in ranking(self.trials, self.space.sign) if t.state is TrialState.COMPLETE), None)

    @property
    def best_trial(self) -> TrialRecord | None:
        """``best``, by the name Optuna's ``Study`` gives it."""
        return self.best

    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's searched parameters (the space's fixed values are in ``fixed``)."""
        return dict(self.best.params) if self.best else {}

    @property
    def fixed(self) -> dict[str, Any]:
        """What the space fixed for every trial."""
        return dict(self.space.fixed)

    @property
    def best_config(self) -> dict[str, Any]:
        """Everything the best trial ran with: the fixed values and its searched parameters."""
        return {**self.space.fixed, **self.best.params} if self.best else {}

    @property
    def best_value(self) -> float:
        return self.best.value if self.best and self.best.value is not None else math.nan

    @property
    def direction(self) -> str:
        """``"minimize"`` or ``"maximize"``: the space's, as Optuna's ``Study.direction``."""
        return self.space.direction

    def get_trials(self, deepcopy: bool = True, states: Iterable[Any] | None = None) -> list[TrialRecord]:
        """``trials``, only those in ``states`` where given, as Optuna's ``Study.get_trials``: hpo's
        ``TrialState`` or Optuna's (``FAIL`` is ``FAILED``). Records are frozen: ``deepcopy`` changes nothing."""
        if states is None:
            return list(self.trials)
        wanted = set()
        for state in states:
            ours = state if isinstance(state, TrialState) else _OPTUNA_STATES.get(getattr(state, "name", None))
            if ours is None:
                raise ValueError(f"states: {state!r} is not a trial state of a finished search (hpo.TrialState: "
                                 f"{', '.join(s.name for s in TrialState)})")
            wanted.add(ours)
        return [t for t in self.trials if t.state in wanted]

    def count(self, state: TrialState) -> int:
        return sum(t.state is state for t in self.trials)

    def trials_dataframe(self, attrs: Iterable[str] | None = None) -> pandas.DataFrame:
        """The trials as a table, one row each, as Optuna's ``Study.trials_dataframe``: ``number``,
        ``value``, ``state``, ``duration``, ``params_NAME`` for each searched parameter (empty
        where a condition left it out), ``metrics_NAME`` for each metric the trials ended with
        (the best epoch's), ``stage``, ``reason`` (how it ended) and the trial's MLflow ``run_id``;
        only the columns of ``attrs`` where given (``("number", "value", "params")``)."""
        import pandas

        if attrs is not None:
            attrs = list(attrs)
            if missing := [name for name in attrs if name not in _COLUMNS]:
                raise ValueError(f"attrs: no column {missing[0]!r} here (the columns: {', '.join(_COLUMNS)})")
            table = self.trials_dataframe()
            return table[[column for column in table.columns
                          if column in attrs or column.startswith(tuple(f"{name}_" for name in attrs))]]

        params = sorted({name for t in self.trials for name in t.params})
        metrics = sorted({name for t in self.trials for name in t.metrics})
        columns = ["number", "value", "state", "duration", *(f"params_{n}" for n in params),
                   *(f"metrics_{n}" for n in metrics), "stage", "reason", "run_id"]
        rows = [[t.number, t.value, t.state.value, pandas.Timedelta(seconds=t.duration_s),
                 *(t.params.get(n) for n in params), *(t.metrics.get(n) for n in metrics), t.stage, t.reason,
                 t.run_id] for t in self.trials]
        return pandas.DataFrame(rows, columns=columns)

    def __repr__(self) -> str:
        """One line, as the terminal's summary begins (the dataclass's own repr printed every
        trial's curve)."""
        best = self.best
        found = f"best trial {best.number}: {self.metric} {best.value:.4g}, {best.params}" if best else "no best trial"
        return f"<SearchResult {self.study_name!r}: {trials_text(len(self.trials))} ({by_state(self.trials)}); {found}>"
