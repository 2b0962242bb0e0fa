"""The one trial loop — claim, run with the objective, finish, reap lost trials — that every
driver uses: in this process, in pool workers, in ``hpo worker``, and split across Ray Tune's
searcher (claims), trainable (runs) and callback (finishes)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError
from hpo._listener import SearchListener
from hpo._plan import SearchPlan
from hpo._signals import TrialTimeout, time_limit
from hpo._trial import (
    DONE,
    INTERRUPTED,
    TIMEOUT,
    WORKER_LOST,
    Claim,
    DivergenceGuard,
    Outcome,
    ReadParams,
    Trial,
    TrialPruned,
    TrialRecord,
    TrialState,
    run_objective,
)
from hpo.strategies import WAIT

if TYPE_CHECKING:  # a Ray trial's actor runs trials without either (MLflow takes seconds to import)
    from hpo.store import TrialStore
    from hpo.tracking import MlflowTracker, TrialRun

ShouldPrune = Callable[[int, float], "TrialPruned | None"]
PruneFor = Callable[[Claim], "ShouldPrune | None"]
"""For a claimed trial, the function its reports ask whether it must stop (``None``: never)."""

@dataclass(frozen=True)
class Started:
    """A claimed trial and its MLflow child run."""

    claim: Claim
    run: TrialRun


def worker_name(pid: int | None = None) -> str:
    """How the store names the process that claimed a trial: host:pid."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def set_up(objective: Callable[..., Any], device: str) -> Any:
    """What the objective's optional ``setup(device)`` returns, once per process. Its failure
    ends the search: every trial would fail alike."""
    if not hasattr(objective, "setup"):
        return None
    try:
        return objective.setup(device)
    except Exception as error:
        message = f"its setup on {device} failed: {type(error).__name__}: {error}"
        raise HpoError(message, argument="objective") from error


def make_trial(plan: SearchPlan, claim: Claim, *, device: str, context: Any = None,
               on_report: Callable[[int, dict[str, float]], None] | None = None,
               should_prune: ShouldPrune | None = None) -> Trial:
    """The handle the objective gets for a claimed trial."""
    return Trial(claim.number, seed=claim.seed, device=device, stage=claim.stage, metric=plan.space.metric,
                 direction=plan.space.direction,
                 on_report=on_report, should_prune=should_prune,
                 guard=DivergenceGuard() if plan.divergence_guard else None, context=context)


def run_trial(
    plan: SearchPlan,
    objective: Callable[..., Any],
    claim: Claim,
    *,
    device: str,
    context: Any = None,
    on_report: Callable[[int, dict[str, float]], None] | None = None,
    should_prune: ShouldPrune | None = None,
    node: str | None = None,
) -> TrialRecord:
    """Run the objective on a claimed trial: whatever happens becomes the trial's record, but
    for ``KeyboardInterrupt`` and ``SystemExit``, which propagate."""
    trial = make_trial(plan, claim, device=device, context=context, on_report=on_report, should_prune=should_prune)
    started = time.perf_counter()
    params = ReadParams({**plan.space.fixed, **claim.params})
    outcome = run_objective(objective, params, trial, plan.space.metric)
    return record_of(claim, outcome, device, time.perf_counter() - started, node, trial.curve(), params.unread())


def record_of(claim: Claim, outcome: Outcome, device: str, duration_s: float, node: str | None = None,
              curve: list[tuple[int, float]] | None = None, unread: list[str] | None = None) -> TrialRecord:
    return TrialRecord(
        number=claim.number, params=claim.params, state=outcome.state, value=outcome.value, stage=claim.stage,
        reason=outcome.reason, metrics=outcome.metrics, seed=claim.seed, device=device, duration_s=duration_s,
        node=node or socket.gethostname(), where=outcome.where, traceback=outcome.traceback, detail=outcome.detail,
        curve=curve or [], unread=unread or [],
    )


def population_size(population: int | str, plan: SearchPlan, objective: Callable[..., Any], device: str,
                    context: Any) -> int:
    """How many trials to claim and train together: ``population``, or for ``"auto"`` what suits
    the device and the model where the objective trains populations (one at a time where it cannot)."""
    if population != "auto":
        return int(population)
    if not hasattr(objective, "population"):
        return 1
    from hpo.population import auto_size

    probe = Trial(-1, seed=0, device=device, context=context)
    return auto_size(objective.population(plan.space.fixed, probe), plan.space.fixed, device)


class TrialLoop:
    """The steps of a trial's life, each written once, against one store and one tracker."""

    def __init__(self, plan: SearchPlan, store: TrialStore, tracker: MlflowTracker,
                 deadline: float | None = None) -> None:
        self.plan = plan
        self.store = store
        self.tracker = tracker
        self.deadline = deadline
        """When (``time.time()``) this run of the search stops starting trials: its ``timeout``."""

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def claim(self, worker: str, device: str, count: int = 1) -> list[Started] | object:
        """Up to ``count`` trials, started in the store and in MLflow; ``WAIT`` or ``DONE`` as
        the store says, and ``DONE`` past the deadline."""
        if self.out_of_time:
            return DONE
        claims = self.store.claim(self.plan, worker, count)
        if not isinstance(claims, list):
            return claims
        started = []
        for claim in claims:
            tags = {"hpo.retry_of": str(claim.retry_of)} if claim.retry_of is not None else None
            run = self.tracker.start_trial(claim.number, claim.params, stage=claim.stage, seed=claim.seed,
                                           device=device, tags=tags)
            started.append(Started(claim, run))
        return started

    def run(self, batch: list[Started], objective: Callable[..., Any], *, device: str, context: Any = None,
            pruning: PruneFor | None = None) -> list[TrialRecord]:
        """Run claimed trials here and finish them: together, in populations of the members
        that can train together, where the objective offers it; else one after another, each
        within the plan's time limit. Whatever stops the loop itself (Ctrl-C, SIGTERM, an error
        that ends the search) finishes every unfinished one as interrupted first: none is left
        running, and they run again on resume."""
        began = time.perf_counter()
        records: dict[int, TrialRecord] = {}
        try:
            if len(batch) > 1 and hasattr(objective, "population"):
                for group in self._populations(batch):
                    records.update(self._run_population(group, objective, device=device, context=context,
                                                        pruning=pruning))
            else:
                for started in batch:
                    with time_limit(self.plan.trial_timeout):
                        record = run_trial(self.plan, objective, started.claim, device=device, context=context,
                                           on_report=started.run.log,
                                           should_prune=pruning(started.claim) if pruning else None)
                    records[started.claim.number] = self.finish(started, record)
        except BaseException:
            interrupted = Outcome(TrialState.FAILED, reason=INTERRUPTED)
            for started in batch:
                if started.claim.number not in records:
                    self.finish(started, record_of(started.claim, interrupted, device, time.perf_counter() - began))
            raise
        return [records[started.claim.number] for started in batch]

    def _populations(self, batch: list[Started]) -> list[list[Started]]:
        from hpo.population import group_key

        groups: dict[str, list[Started]] = {}
        for started in batch:
            groups.setdefault(group_key({**self.plan.space.fixed, **started.claim.params}), []).append(started)
        return list(groups.values())

    def _run_population(self, group: list[Started], objective: Any, *, device: str, context: Any,
                        pruning: PruneFor | None) -> dict[int, TrialRecord]:
        from hpo.population import train_population

        plan = self.plan
        trials = [make_trial(plan, s.claim, device=device, context=context, on_report=s.run.log,
                             should_prune=pruning(s.claim) if pruning else None) for s in group]
        members = [(ReadParams({**plan.space.fixed, **s.claim.params}), trial)
                   for s, trial in zip(group, trials, strict=True)]
        began = time.perf_counter()
        try:
            with time_limit(plan.trial_timeout):  # the members share their time: the limit is each one's
                outcomes = train_population(objective.population(members[0][0], trials[0]), members,
                                            plan.space.metric)
        except TrialTimeout:
            outcomes = [Outcome(TrialState.FAILED, reason=TIMEOUT)] * len(group)
        duration = time.perf_counter() - began
        name = f"{worker_name()}/{group[0].claim.number}"
        tags = {"hpo.population": name, "hpo.population_size": str(len(group))}
        # members share what they do not differ in, read from one of them: read by one, read by all
        read = set().union(*(params.read for params, _ in members))
        records = [record_of(s.claim, outcome, device, duration, curve=trial.curve(),
                             unread=[key for key in params.plain if key not in read])
                   for s, outcome, trial, (params, _) in zip(group, outcomes, trials, members, strict=True)]
        return {record.number: record for record in self.finish_many(list(zip(group, records, strict=True)), tags)}

    def finish(self, started: Started, record: TrialRecord, tags: dict[str, str] | None = None) -> TrialRecord:
        """End the trial in the store (naming its child run, once MLflow has made it), then its
        child run the same way the store holds it."""
        return self.finish_many([(started, record)], tags)[0]

    def finish_many(self, ended: list[tuple[Started, TrialRecord]], tags: dict[str, str] | None = None,
                    ) -> list[TrialRecord]:
        """``finish`` for several trials (a population), written to the store together."""
        stored = self.store.finish_many(
            [(s.claim, dataclasses.replace(record, run_id=s.run.run_id or "")) for s, record in ended])
        for (started, _), record in zip(ended, stored, strict=True):
            started.run.finish(record, tags)
        return stored

    def fail(self, trial_ids: list[int], reason: str = WORKER_LOST) -> list[TrialRecord]:
        """Fail trials whose process is gone, in the store and in MLflow (creating the child
        run of a trial that died before it had one): every trial keeps exactly one run."""
        failed = self.store.fail(trial_ids, reason)
        for record in failed:
            self.tracker.record_lost(record)
        return failed

    def fail_worker(self, worker: str, reason: str = WORKER_LOST) -> list[TrialRecord]:
        """The running trials of a process known to be gone."""
        return self.fail(self.store.running(worker), reason)

    def reap(self) -> list[TrialRecord]:
        """Fail the trials whose heartbeat stopped: their process died."""
        return self.fail(self.store.stale())


def work(
    loop: TrialLoop,
    objective: Callable[..., Any],
    *,
    device: str,
    context: Any,
    listener: SearchListener,
    pruning: PruneFor | None = None,
    wait_for_others: bool = True,
    population: int | str = 1,
) -> None:
    """Claim and run trials in this process — ``population`` at a time — until the budget is
    claimed, and, if asked, until every trial of it has finished (running a lost trial's
    retry if one turns up meanwhile)."""
    worker = worker_name()
    size = population_size(population, loop.plan, objective, device, context)
    heartbeat = loop.store.heartbeat()
    try:
        while True:
            loop.reap()
            batch = loop.claim(worker, device, size)
            if batch is DONE:
                if not wait_for_others or not loop.store.unfinished():
                    return
                time.sleep(1.0)  # another process is still finishing trials of this budget
            elif batch is WAIT:
                time.sleep(0.5)  # the next stage waits for trials running elsewhere
            else:
                assert isinstance(batch, list)
                listener.running([started.claim.number for started in batch])
                with heartbeat.beating([started.claim.trial_id for started in batch]):
                    records = loop.run(batch, objective, device=device, context=context, pruning=pruning)
                for record in records:
                    if not record.lost:  # else another process found it stale, and its retry will run
                        listener.trial_finished(record)
    finally:
        heartbeat.close()
