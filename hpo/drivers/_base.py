"""The driver interface: an engine that runs a planned search, and the trial step they share."""

from __future__ import annotations

import abc
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from hpo._errors import HpoError
from hpo._trial import (
    DivergenceGuard,
    Outcome,
    Trial,
    TrialRecord,
    TrialState,
    run_objective,
    trial_seed,
)
from hpo.strategies import params_key

if TYPE_CHECKING:
    from hpo._search import SearchPlan
    from hpo.tracking import MlflowTracker

PRUNERS = ("none", "median", "successive-halving", "hyperband")
INTERRUPTED = "interrupted"
"""The reason of a trial whose search the user stopped (Ctrl-C): it runs again on resume."""
WORKER_LOST = "worker lost"
"""The reason of a trial whose process died (killed, machine gone): it runs again."""


MAX_RETRIES = 2
"""A configuration lost with its process (or to Ctrl-C) runs at most 1 + MAX_RETRIES times."""


def is_lost(trial: TrialRecord) -> bool:
    """Lost with its process or to Ctrl-C: its configuration is owed another run."""
    return trial.state is TrialState.FAILED and trial.reason in (INTERRUPTED, WORKER_LOST)


def in_budget(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The trials that take a place in the budget, oldest first: all of them, except those
    lost with their process or to Ctrl-C, whose configuration runs again — up to
    ``MAX_RETRIES`` times; the last loss then stands as that configuration's failure."""
    losses: Counter[str] = Counter()
    kept = []
    for trial in sorted(trials, key=lambda t: t.number):
        if is_lost(trial):
            key = params_key(trial.params)
            losses[key] += 1
            if losses[key] <= MAX_RETRIES:
                continue
        kept.append(trial)
    return kept


def space_changed(plan: SearchPlan) -> HpoError:
    """The error for resuming a study with a space other than the one it was created with."""
    return HpoError(
        f"--study: study {plan.study_name!r} was created with a different version of space "
        f"{plan.space.name!r}; name a new study with --study"
    )


class SearchListener:
    """Hears how a search goes (the CLI's progress bar is one); every method is optional."""

    def resumed(self, trials: list[TrialRecord]) -> None:
        """The trials already in the study when the search starts."""

    def trial_finished(self, trial: TrialRecord) -> None:
        """A trial of this run has ended, whatever its state."""


class BaseDriver(abc.ABC):
    """Runs trials on an engine until the budget is spent or the strategy has nothing left."""

    name: ClassVar[str]
    device: str
    """The torch device trials run on (``cpu``, ``cuda``, ``cuda:1``)."""

    def check(self, plan: SearchPlan) -> None:  # noqa: B027 (an optional hook)
        """Refuse a plan that an existing study contradicts, before anything is written."""

    @abc.abstractmethod
    def run(
        self,
        plan: SearchPlan,
        objective: Callable[..., Any],
        tracker: MlflowTracker,
        listener: SearchListener,
    ) -> list[TrialRecord]:
        """Run the search (resuming it if it exists) and return every trial, oldest first."""


def execute_trial(
    plan: SearchPlan,
    objective: Callable[..., Any],
    tracker: MlflowTracker,
    *,
    number: int,
    params: dict[str, Any],
    stage: int,
    device: str,
    should_prune: Callable[[int, float], str | None] | None,
    context: Any = None,
    tags: dict[str, str] | None = None,
) -> TrialRecord:
    """One trial, engine-agnostic: the objective runs, MLflow records it from start to end."""
    seed = trial_seed(plan.seed, number)
    run = tracker.start_trial(number, params, stage=stage, seed=seed, device=device, tags=tags)
    trial = Trial(
        number,
        seed=seed,
        device=device,
        stage=stage,
        metric=plan.space.metric,
        on_report=run.log,
        should_prune=should_prune,
        guard=DivergenceGuard() if plan.divergence_guard else None,
        context=context,
    )
    started = time.perf_counter()
    try:
        outcome = run_objective(objective, {**plan.space.fixed, **params}, trial, plan.space.metric)
    except KeyboardInterrupt:  # the user stopped the search: this trial will run again on resume
        outcome = Outcome(TrialState.FAILED, reason=INTERRUPTED)
        run.finish(_record(number, params, stage, outcome, seed, device, time.perf_counter() - started))
        raise
    record = _record(number, params, stage, outcome, seed, device, time.perf_counter() - started)
    run.finish(record)
    return record


def _record(number: int, params: dict[str, Any], stage: int, outcome: Outcome, seed: int, device: str,
            duration_s: float) -> TrialRecord:
    return TrialRecord(
        number=number,
        params=params,
        state=outcome.state,
        value=outcome.value,
        stage=stage,
        reason=outcome.reason,
        metrics=outcome.metrics,
        seed=seed,
        device=device,
        duration_s=duration_s,
        node=socket.gethostname(),
    )
