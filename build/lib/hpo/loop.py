"""The one trial loop — claim, run with the objective, finish, reap lost trials — that every
driver uses: in this process, in pool workers, in ``hpo worker``, and split across Ray Tune's
searcher (claims), trainable (runs) and callback (finishes)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpo._errors import HpoError
from hpo._listener import SearchListener
from hpo._plan import SearchPlan
from hpo._trial import (
    INTERRUPTED,
    WORKER_LOST,
    DivergenceGuard,
    Outcome,
    Trial,
    TrialRecord,
    TrialState,
    run_objective,
)
from hpo.store import DONE, Claim, TrialStore
from hpo.strategies import WAIT
from hpo.tracking import MlflowTracker, TrialRun

ShouldPrune = Callable[[int, float], "str | None"]


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
        raise HpoError(f"--objective: its setup on {device} failed: {type(error).__name__}: {error}") from error


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
    trial = Trial(
        claim.number, seed=claim.seed, device=device, stage=claim.stage, metric=plan.space.metric,
        on_report=on_report, should_prune=should_prune,
        guard=DivergenceGuard() if plan.divergence_guard else None, context=context,
    )
    started = time.perf_counter()
    outcome = run_objective(objective, {**plan.space.fixed, **claim.params}, trial, plan.space.metric)
    return record_of(claim, outcome, device, time.perf_counter() - started, node)


def record_of(claim: Claim, outcome: Outcome, device: str, duration_s: float, node: str | None = None) -> TrialRecord:
    return TrialRecord(
        number=claim.number, params=claim.params, state=outcome.state, value=outcome.value, stage=claim.stage,
        reason=outcome.reason, metrics=outcome.metrics, seed=claim.seed, device=device, duration_s=duration_s,
        node=node or socket.gethostname(),
    )


class TrialLoop:
    """The steps of a trial's life, each written once, against one store and one tracker."""

    def __init__(self, plan: SearchPlan, store: TrialStore, tracker: MlflowTracker) -> None:
        self.plan = plan
        self.store = store
        self.tracker = tracker

    def claim(self, worker: str, device: str) -> Started | object:
        """The next trial, started in the store and in MLflow; ``WAIT`` or ``DONE`` as the store says."""
        claim = self.store.claim(self.plan, worker)
        if not isinstance(claim, Claim):
            return claim
        tags = {"hpo.retry_of": str(claim.retry_of)} if claim.retry_of is not None else None
        run = self.tracker.start_trial(claim.number, claim.params, stage=claim.stage, seed=claim.seed,
                                       device=device, tags=tags)
        return Started(claim, run)

    def run(self, started: Started, objective: Callable[..., Any], *, device: str, context: Any = None,
            should_prune: ShouldPrune | None = None) -> TrialRecord:
        """Run a claimed trial here and finish it; Ctrl-C finishes it as interrupted, then stops."""
        began = time.perf_counter()
        try:
            record = run_trial(self.plan, objective, started.claim, device=device, context=context,
                               on_report=started.run.log, should_prune=should_prune)
        except KeyboardInterrupt:  # the user stopped the search: this trial runs again on resume
            interrupted = Outcome(TrialState.FAILED, reason=INTERRUPTED)
            self.finish(started, record_of(started.claim, interrupted, device, time.perf_counter() - began))
            raise
        return self.finish(started, record)

    def finish(self, started: Started, record: TrialRecord) -> TrialRecord:
        """End the trial in the store, then its child run the same way the store holds it."""
        stored = self.store.finish(started.claim, record)
        started.run.finish(stored)
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
    prune: Callable[[Claim], ShouldPrune | None] | None = None,
    wait_for_others: bool = True,
) -> None:
    """Claim and run trials in this process until the budget is claimed — and, if asked, until
    every trial of it has finished (running a lost trial's retry if one turns up meanwhile)."""
    worker = worker_name()
    heartbeat = loop.store.heartbeat()
    try:
        while True:
            loop.reap()
            started = loop.claim(worker, device)
            if started is DONE:
                if not wait_for_others or not loop.store.unfinished():
                    return
                time.sleep(1.0)  # another process is still finishing trials of this budget
            elif started is WAIT:
                time.sleep(0.5)  # the next stage waits for trials running elsewhere
            else:
                assert isinstance(started, Started)
                with heartbeat.beating(started.claim.trial_id):
                    record = loop.run(started, objective, device=device, context=context,
                                      should_prune=prune(started.claim) if prune else None)
                if not record.lost:  # else another process found it stale, and its retry will run
                    listener.trial_finished(record)
    finally:
        heartbeat.close()
