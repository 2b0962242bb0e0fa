"""The Optuna driver: the trial loop in this process, or in a pool of warm worker processes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import cloudpickle
import optuna

from hpo._trial import INTERRUPTED, TrialRecord
from hpo.dispatch import DeviceSlot, WorkerPool, plan_slots
from hpo.drivers._base import Driver
from hpo.drivers.optuna import OptunaOptions
from hpo.loop import PruneFor, SearchListener, ShouldPrune, TrialLoop, set_up, work, worker_name
from hpo.spaces import Pruning
from hpo.store import Claim
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
        payload = cloudpickle.dumps((loop.plan, objective, loop.store, loop.tracker.identity(), population))
        WorkerPool(
            self.slots, functools.partial(_worker_main, payload, wait_for_others),
            on_event=listener.trial_finished,
            on_lost=lambda pid: loop.fail_worker(worker_name(pid)),
            on_stopped=lambda pid: loop.fail_worker(worker_name(pid), INTERRUPTED),
        ).run()


class _QueueListener(SearchListener):
    """A worker's listener: finished trials go to the parent (its progress bar)."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def trial_finished(self, trial: TrialRecord) -> None:
        self.events.put(trial)


def _worker_main(payload: bytes, wait_for_others: bool, slot: DeviceSlot, events: Any) -> None:
    """A pool worker: the same loop as in-process, warm on its slot."""
    plan, objective, store, tracking, population = cloudpickle.loads(payload)
    loop = TrialLoop(plan, store, MlflowTracker.attach(tracking))
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

    def for_claim(claim: Claim) -> ShouldPrune:
        trial = loop.store.pruned_trial(claim, pruner, by_stage=plan.pruning.by_stage)

        def should_prune(step: int, value: float) -> str | None:
            try:
                trial.report(value, step)
                return loop.plan.pruner if trial.should_prune() else None
            except optuna.exceptions.UpdateFinishedTrialError:  # failed as lost meanwhile: finishing says so
                return None

        return should_prune

    return for_claim


def make_pruner(pruning: Pruning, epochs: int) -> optuna.pruners.BasePruner | None:
    """Optuna's pruner for ``pruning``, its warm-up in reports scaled to trials of ``epochs``."""
    steps = pruning.steps(epochs)
    if pruning.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruning.warmup_trials, n_warmup_steps=steps)
    if pruning.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, steps), reduction_factor=3)
    if pruning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, steps), max_resource=max(steps + 1, epochs),
                                              reduction_factor=3)
    return None
