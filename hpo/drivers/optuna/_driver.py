"""The Optuna driver: the trial loop in this process, or in a pool of warm worker processes."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import optuna

from hpo._trial import INTERRUPTED, TIMEOUT, WORKER_LOST, TrialPruned, TrialRecord, median_detail
from hpo.dispatch import DeviceSlot, WorkerPool, plan_slots
from hpo.drivers._base import Driver
from hpo.drivers.optuna import OptunaOptions
from hpo.loop import PruneFor, SearchListener, ShouldPrune, TrialLoop, set_up, work, worker_name
from hpo.spaces import Pruning
from hpo.store import Claim, MedianRule, StageStudy
from hpo.tracking import MlflowTracker


class OptunaDriver(Driver):
    """Runs the trial loop warm in this process (one slot) or in one long-lived worker process
    per device slot; Optuna's pruners decide from the values each trial reports to the store."""

    name = "optuna"

    def __init__(self, options: OptunaOptions) -> None:
        self.options = options
        self.slots = plan_slots(options.workers, options.gpus, options.trials_per_gpu)

    @property
    def device(self) -> str:
        """Where trials run in this process (a pool's parent tests the best configuration
        there): the first slot's device."""
        return self.slots[0].device

    def run(self, loop: TrialLoop, objective: Callable[..., Any], listener: SearchListener,
            population: int | str = 1) -> None:
        self._serve(loop, objective, listener, population=population, wait_for_others=True)

    def join(self, loop: TrialLoop, objective: Callable[..., Any], listener: SearchListener,
             population: int | str = 1) -> None:
        """Work on a search another process runs (``hpo worker``), until its budget is claimed."""
        self._serve(loop, objective, listener, population=population, wait_for_others=False)

    def _serve(self, loop: TrialLoop, objective: Callable[..., Any], listener: SearchListener, *,
               population: int | str, wait_for_others: bool) -> None:
        if len(self.slots) == 1:
            work(loop, objective, device=self.device, context=set_up(objective, self.device), listener=listener,
                 pruning=pruning(loop), wait_for_others=wait_for_others, population=population)
            return
        payload = cloudpickle.dumps((loop.plan, objective, loop.store, loop.tracker.identity(), population,
                                     loop.deadline))
        watch = _HangWatch(loop, listener)
        WorkerPool(
            self.slots, functools.partial(_worker_main, payload, wait_for_others),
            on_event=watch.heard,
            on_lost=lambda pid: loop.fail_worker(worker_name(pid), watch.reason(pid)),
            on_stopped=lambda pid: loop.fail_worker(worker_name(pid), INTERRUPTED),
            on_tick=watch.tick if loop.plan.trial_timeout else None,
        ).run()


HANG_GRACE_S = 5.0
"""How long past its time limit a worker's trial may go on before the parent kills the worker:
within the limit, the worker ends the trial itself; a trial hung inside C code cannot be."""


class _HangWatch:
    """The pool's parent side of the time limit: what each worker runs since when, and the
    worker whose trial hangs past the limit killed and replaced, the trial failed as timeout."""

    def __init__(self, loop: TrialLoop, listener: SearchListener) -> None:
        self.loop = loop
        self.listener = listener
        self.since: dict[int, float] = {}  # worker pid -> when its running trials started
        self.killed: set[int] = set()

    def heard(self, event: Any) -> None:
        if isinstance(event, _Running):
            self.since[event.pid] = time.monotonic()
        else:
            self.listener.trial_finished(event)

    def tick(self, pool: WorkerPool) -> None:
        limit = (self.loop.plan.trial_timeout or 0) + HANG_GRACE_S
        for pid, since in list(self.since.items()):
            overdue = pid not in self.killed and time.monotonic() - since > limit
            if overdue and self.loop.store.running(worker_name(pid)):
                self.killed.add(pid)
                pool.replace(pid)

    def reason(self, pid: int) -> str:
        return TIMEOUT if pid in self.killed else WORKER_LOST


@dataclasses.dataclass(frozen=True)
class _Running:
    """A worker's message: it starts running trials now."""

    pid: int


class _QueueListener(SearchListener):
    """A worker's listener: what it runs, and finished trials, go to the parent (its progress
    bar, its watch on time limits)."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def running(self, numbers: list[int]) -> None:
        self.events.put(_Running(os.getpid()))

    def trial_finished(self, trial: TrialRecord) -> None:
        self.events.put(trial)


def _worker_main(payload: bytes, wait_for_others: bool, slot: DeviceSlot, events: Any) -> None:
    """A pool worker: the same loop as in-process, warm on its slot."""
    plan, objective, store, tracking, population, deadline = cloudpickle.loads(payload)
    loop = TrialLoop(plan, store, MlflowTracker.attach(tracking), deadline)
    try:
        work(loop, objective, device=slot.device, context=set_up(objective, slot.device),
             listener=_QueueListener(events), pruning=pruning(loop), wait_for_others=wait_for_others,
             population=population)
    finally:
        loop.tracker.flush()  # the trials' last MLflow writes, before the process ends


def pruning(loop: TrialLoop) -> PruneFor | None:
    """With a pruner, each report's value of the space's metric goes to the store and the
    plan's Optuna pruner decides from the study's values whether the trial stops."""
    plan = loop.plan
    pruner = make_pruner(plan.pruning, plan.space.epochs)
    if pruner is None:
        return None

    sign = 1 if plan.space.direction == "minimize" else -1

    def for_claim(claim: Claim) -> ShouldPrune:
        trial = loop.store.pruned_trial(plan, claim, pruner)
        best = math.inf

        def should_prune(step: int, value: float) -> TrialPruned | None:
            nonlocal best
            if math.isfinite(value):
                best = min(best, sign * value)
            try:
                trial.report(value, step)
                if not trial.should_prune():
                    return None
            except optuna.exceptions.UpdateFinishedTrialError:  # failed as lost meanwhile: finishing says so
                return None
            return TrialPruned(plan.pruner, why_pruned(trial, plan.pruner, step, sign * best))

        return should_prune

    return for_claim


def why_pruned(trial: optuna.Trial, pruner: str, step: int, best: float) -> str:
    """What the pruner saw, in words: ``at epoch 2: 0.263 > median 0.236 of 5 trials``."""
    if pruner != "median":
        return f"at epoch {step}: its best {best:.4g} was not among the best third of its rung"
    study = trial.study
    assert isinstance(study, StageStudy)
    median, count = study.percentile_at(step, 50.0, 1)
    return median_detail(step, best, median, count, study.direction.name.lower())


def make_pruner(pruning: Pruning, epochs: int) -> optuna.pruners.BasePruner | None:
    """Optuna's pruner for ``pruning``, its warm-up in reports scaled to trials of ``epochs``."""
    steps = pruning.steps(epochs)
    if pruning.pruner == "median":
        return MedianRule(n_startup_trials=pruning.warmup_trials, n_warmup_steps=steps)
    if pruning.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, steps), reduction_factor=3)
    if pruning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, steps), max_resource=max(steps + 1, epochs),
                                              reduction_factor=3)
    return None
