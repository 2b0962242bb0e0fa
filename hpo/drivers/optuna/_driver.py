"""The Optuna driver: the trial loop in this process, or in a pool of warm worker processes, each
with the loop's own pruning."""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import marshal
import os
import pickle
import time
import types
from collections.abc import Callable
from typing import Any, ClassVar

import cloudpickle

from hpo.dispatch import DeviceSlot, Printed, WorkerPool, plan_slots, send_printed, write_printed
from hpo.drivers._base import Driver
from hpo.drivers.optuna import OptunaOptions
from hpo.loop import SearchListener, TrialLoop, set_up, work, worker_name
from hpo.tracking import MlflowTracker
from hpo.trial import INTERRUPTED, TIMEOUT, WORKER_LOST, TrialRecord, trials_text


class OptunaDriver(Driver):
    """Runs the trial loop warm in this process (one slot) or in one long-lived worker process
    per device slot."""

    name = "optuna"

    def __init__(self, options: OptunaOptions) -> None:
        self.options = options
        self.slots = plan_slots(options.workers, options.gpus, options.trials_per_gpu)

    @property
    def device(self) -> str:
        """Where trials run in this process (a pool's parent tests the best configuration
        there): the first slot's device."""
        return self.slots[0].device

    def run(self, loop: TrialLoop, objective: Callable[..., Any], population: int | str = 1) -> None:
        self._serve(loop, objective, population=population, wait_for_others=True)

    def join(self, loop: TrialLoop, objective: Callable[..., Any], population: int | str = 1) -> None:
        """Work on a search another process runs (``hpo worker``), until its budget is claimed."""
        self._serve(loop, objective, population=population, wait_for_others=False)

    def _serve(self, loop: TrialLoop, objective: Callable[..., Any], *, population: int | str,
               wait_for_others: bool) -> None:
        if (shared := self.options.trials_per_gpu) > 1 and all(slot.gpu is None for slot in self.slots):
            loop.listener.notice(f"--trials-per-gpu {shared}: no GPU "
                                 f"{'named (--gpus none)' if self.options.gpus == 'none' else 'on this machine'}, "
                                 f"so trials run on the CPU, {trials_text(len(self.slots))} at a time (--workers)")
        if len(self.slots) == 1:
            work(loop, objective, device=self.device, context=set_up(objective, self.device, loop.listener.notice),
                 wait_for_others=wait_for_others, population=population)
            return
        payload = _dumps((loop.plan, objective, loop.store, loop.tracker.identity(), population, loop.deadline))
        watch = _PoolWatch(loop, loop.listener)
        slots = plan_slots(self.options.workers, self.options.gpus, self.options.trials_per_gpu,
                           at_most=loop.trials_left())
        pool = WorkerPool(
            slots, functools.partial(_worker_main, payload, wait_for_others),
            on_event=watch.heard,
            on_lost=lambda pid: loop.fail_worker(worker_name(pid), watch.reason(pid)),
            on_stopped=lambda pid: loop.fail_worker(worker_name(pid), INTERRUPTED),
            on_tick=watch.tick,
        )
        pool.run()
        watch.look_elsewhere(pool, at_once=True)  # what ended elsewhere after the last look


HANG_GRACE_S = 5.0
"""How long past its time limit a worker's trial may go on before the parent kills the worker:
within the limit, the worker ends the trial itself; a trial hung inside C code cannot be."""


class _PoolWatch:
    """The pool's parent side: the workers' events passed on to the search's listener with what
    processes outside the pool ended; and for the time limit, what each worker runs since when,
    the worker whose trial hangs past the limit killed and replaced, the trial failed as timeout."""

    def __init__(self, loop: TrialLoop, listener: SearchListener) -> None:
        self.loop = loop
        self.listener = listener
        self.since: dict[int, float] = {}  # worker pid -> when it last started or ended a trial
        self.killed: set[int] = set()
        self.said: set[str] = set()

    def heard(self, event: Any) -> None:
        """A worker's event, passed on to the search's listener; a notice every worker sends
        alike (its population, its setup running long), once."""
        if isinstance(event, _Notice):
            if event.text not in self.said:
                self.said.add(event.text)
                self.listener.notice(event.text)
            return
        if isinstance(event, Printed):
            write_printed(event)
            return
        self.since[event.pid] = time.monotonic()
        if isinstance(event, _Running):
            self.listener.running(event.numbers)
        else:
            self.listener.trial_finished(event.record)

    def tick(self, pool: WorkerPool) -> None:
        self.look_elsewhere(pool)
        if self.loop.plan.trial_timeout is None:
            return
        limit = self.loop.plan.trial_timeout + HANG_GRACE_S
        for pid, since in list(self.since.items()):
            overdue = pid not in self.killed and time.monotonic() - since > limit
            if overdue and (hung := self.loop.store.running(worker_name(pid))):
                self.killed.add(pid)
                # Failed first: once the worker is gone, any process of the search may fail its
                # trial (as lost: its process has ended) before this one hears it has gone.
                self.loop.fail(hung, TIMEOUT)
                pool.replace(pid)

    def look_elsewhere(self, pool: WorkerPool, *, at_once: bool = False) -> None:
        """Take in the trials of the search that processes other than the pool's ended (``hpo
        worker``, another machine): the workers' own loops tell only of their own trials."""
        self.loop.ours.update(worker_name(pid) for pid in pool.started)
        if at_once:
            self.loop.take_in_endings(look=True)
        else:
            self.loop.look()

    def reason(self, pid: int) -> str:
        return TIMEOUT if pid in self.killed else WORKER_LOST


@dataclasses.dataclass(frozen=True)
class _Running:
    """A worker's message: it starts running these trials now."""

    pid: int
    numbers: list[int]


@dataclasses.dataclass(frozen=True)
class _Finished:
    """A worker's message: this trial ended."""

    pid: int
    record: TrialRecord


@dataclasses.dataclass(frozen=True)
class _Notice:
    """A worker's message for the user."""

    text: str


class _QueueListener(SearchListener):
    """A worker's listener: every event goes to the parent (its progress bar, the user's
    listener, its watch on time limits)."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def running(self, numbers: list[int]) -> None:
        self.events.put(_Running(os.getpid(), numbers))

    def trial_finished(self, trial: TrialRecord) -> None:
        self.events.put(_Finished(os.getpid(), trial))

    def notice(self, text: str) -> None:
        self.events.put(_Notice(text))


def _marshalled(code: types.CodeType) -> tuple[Any, tuple[bytes]]:
    return marshal.loads, (marshal.dumps(code),)


class _FileNamingPickler(cloudpickle.Pickler):
    """cloudpickle, but the code of functions it sends by value (an objective from ``mine.py`` or a
    script's ``__main__``) keeps its file's name, which cloudpickle 3.1 replaces with
    ``<dynamic-code>``: a worker's trial that raises is then named by its line (``mine.py:5``),
    and its traceback shows the source, as in the search's own process. Code goes as ``marshal``
    writes it: the workers run the same interpreter."""

    dispatch_table: ClassVar = collections.ChainMap({types.CodeType: _marshalled}, cloudpickle.Pickler.dispatch_table)


def _dumps(payload: Any) -> bytes:
    buffer = io.BytesIO()
    _FileNamingPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
    return buffer.getvalue()


def _worker_main(payload: bytes, wait_for_others: bool, slot: DeviceSlot, events: Any) -> None:
    """A pool worker: the same loop as in-process, warm on its slot; what its code prints goes
    through the parent."""
    printed, warned = send_printed(events.put)
    plan, objective, store, tracking, population, deadline = cloudpickle.loads(payload)
    tracker = MlflowTracker.attach(tracking, store.url)
    loop = TrialLoop(plan, store, tracker, listener=_QueueListener(events), deadline=deadline)
    try:
        work(loop, objective, device=slot.device, context=set_up(objective, slot.device, loop.listener.notice),
             wait_for_others=wait_for_others, population=population)
    finally:
        loop.tracker.flush()  # the trials' last MLflow writes, before the process ends
        printed.close_line()
        warned.close_line()
