"""The simulated driver: virtual workers on one clock that jumps to the next event, each event
one step of the trial of the worker whose clock is earliest."""

from __future__ import annotations

import heapq
import inspect
import itertools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from hpo.drivers._base import Driver
from hpo.drivers.simulated import SimulatedOptions
from hpo.loop import POPULATION_NOTICE, Started, TrialLoop, record_of, set_up
from hpo.strategies import WAIT
from hpo.trial import DONE, Outcome, ReadParams, Trial, ended_by, outcome_of


@dataclass(eq=False)
class _Running:
    """A virtual worker's trial: its loop side, its handle, and its objective, paused at a yield."""

    started: Started
    trial: Trial
    params: ReadParams
    objective: Callable[..., Any]
    began: float
    steps: Generator[float, None, Any] | None = None
    ended: Outcome | None = None
    """How a plain objective ended, once its run's wall time has passed on the clock."""


class SimulatedDriver(Driver):
    """Runs each claimed trial's generator one step per event, in simulated time; the trial
    loop (claims, reports, pruning, endings, the ``timeout``) runs as on any driver."""

    name = "simulated"

    def __init__(self, options: SimulatedOptions) -> None:
        self.workers = options.workers
        self.now = time.time()

    @property
    def device(self) -> str:
        return "cpu"

    def clock(self) -> float:
        return self.now

    def run(self, loop: TrialLoop, objective: Callable[..., Any], population: int | str = 1) -> None:
        """Until the budget is claimed and ended; ``population`` is not simulated: one trial a worker."""
        if population not in (1, "auto"):
            loop.listener.notice(f"{POPULATION_NOTICE}none: the simulated driver runs one trial a virtual worker "
                                 f"(population {population} asked)")
        context = set_up(objective, self.device)
        order = itertools.count()
        events = [(self.now, next(order), worker) for worker in range(self.workers)]
        running: dict[int, _Running] = {}
        try:
            while events:
                self.now, _, worker = heapq.heappop(events)
                if worker not in running:
                    batch = loop.claim(f"simulated:{worker}", self.device)
                    if batch is DONE and not loop.store.unfinished():
                        continue  # this worker retires; the budget is claimed and ended
                    if batch is DONE or batch is WAIT:  # trials still running may end lost, or end a stage
                        later = [when for when, _, other in events if other in running]
                        if not later:  # only another process's trials: they end in real time
                            time.sleep(1.0)
                        heapq.heappush(events, (min(later, default=self.now), next(order), worker))
                        continue
                    assert isinstance(batch, list)
                    running[worker] = self._start(loop, objective, batch[0], context)
                current = running[worker]
                step = current.ended or self._step(current, loop.plan.space.metric)
                if isinstance(step, Outcome):
                    record = record_of(current.started.claim, step, self.device, self.now - current.began,
                                       "simulated", current.trial.curve(), current.params.unread())
                    loop.finish([(current.started, record)])
                    del running[worker]
                    step = 0.0
                heapq.heappush(events, (self.now + step, next(order), worker))
        except BaseException:
            loop.interrupt([current.started for current in running.values()], self.device)
            raise
        finally:
            loop.close(self.device)

    def _start(self, loop: TrialLoop, objective: Callable[..., Any], started: Started, context: Any) -> _Running:
        trial = loop.trial(started, device=self.device, context=context)
        params = ReadParams({**loop.plan.space.fixed, **started.claim.params})
        return _Running(started, trial, params, objective, self.now)

    @staticmethod
    def _step(current: _Running, metric: str) -> float | Outcome:
        """Run the trial's objective to its next yield: the seconds until its next step, or how it
        ended (its return value, pruned, failed). A plain objective runs whole, and ends after
        the seconds it took."""
        began = time.perf_counter()
        try:
            if current.steps is None:
                returned = current.objective(current.params, current.trial)
                if not inspect.isgenerator(returned):
                    current.ended = outcome_of(returned, current.trial, metric)
                    return time.perf_counter() - began
                current.steps = returned
            return max(0.0, float(next(current.steps)))
        except StopIteration as end:
            return outcome_of(end.value, current.trial, metric)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            outcome = ended_by(error, current.trial, metric)
            if current.steps is None:  # a plain objective raised
                current.ended = outcome
                return time.perf_counter() - began
            return outcome
