"""A pool of long-lived worker processes, each pinned to a device slot, claiming trials from
one Optuna study. The parent replaces a worker that dies and fails the trial it was running."""

from __future__ import annotations

import copy
import multiprocessing as mp
import queue
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import cloudpickle

from hpo._errors import HpoError
from hpo.drivers._base import INTERRUPTED, SearchListener
from hpo.drivers._optuna import worker_name
from hpo.tracking import MlflowTracker

if TYPE_CHECKING:
    import optuna

    from hpo._search import SearchPlan
    from hpo._trial import TrialRecord
    from hpo.dispatch._slots import DeviceSlot
    from hpo.drivers._optuna import OptunaDriver

STOP_TIMEOUT_S = 30.0
"""How long a stopped worker may take to close its running trial before it is killed."""
_REFUSED = 2  # a worker's exit code after it sent the parent a user error


class _Refused(str):
    """A worker's message to the parent: a user error (the objective's setup failed, say) that
    every worker would meet alike, so the search stops with it instead of replacing workers."""


class _QueueListener(SearchListener):
    """A worker's listener: finished trials go to the parent (its progress bar)."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def trial_finished(self, trial: TrialRecord) -> None:
        self.events.put(trial)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM from the parent: end the running trial as Ctrl-C would, once."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker_main(payload: bytes, slot: DeviceSlot, events: Any) -> None:
    """A worker process: pin the slot, warm the objective up once, then claim trials.

    Ctrl-C reaches the whole process group; the parent alone answers it, stopping each worker
    with SIGTERM, which ends the worker's running trial as "interrupted".
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        pinned = slot.pin()
        driver, plan, objective, tracking = cloudpickle.loads(payload)
        driver.slots = [pinned]
        tracker = MlflowTracker(tracking["uri"], tracking["experiment"])
        tracker.attach(tracking["experiment_id"], tracking["parent_run_id"])
        study = driver.open_study(plan)
        driver.serve(study, plan, objective, tracker, _QueueListener(events), wait_for_others=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except HpoError as error:
        events.put(_Refused(str(error)))
        sys.exit(_REFUSED)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # leaving: nothing left to close


class WorkerPool:
    """Runs ``driver``'s trials in one process per slot until the budget is spent.

    A worker that exits abnormally (killed, crashed) has its running trial failed as
    "worker lost" at once, in the study and in MLflow, and is replaced; the trial's
    configuration is planned again, a bounded number of times. When the search stops early
    (Ctrl-C), every worker ends its running trial as "interrupted".
    """

    def __init__(self, driver: OptunaDriver, plan: SearchPlan, objective: Any, tracker: MlflowTracker,
                 max_restarts: int | None = None) -> None:
        self.driver = driver
        self.plan = plan
        self.objective = objective
        self.tracker = tracker
        self.max_restarts = 2 * len(driver.slots) if max_restarts is None else max_restarts
        self.context = mp.get_context("spawn")  # no inherited CUDA state, locks or DB connections

    def run(self, study: optuna.Study, listener: SearchListener) -> None:
        tracking = {"uri": self.tracker.tracking_uri, "experiment": self.tracker.experiment_name,
                    "experiment_id": self.tracker.experiment_id, "parent_run_id": self.tracker.parent_run_id}
        slots = self.driver.slots
        pool_driver = _detached(self.driver)
        payload = cloudpickle.dumps((pool_driver, self.plan, self.objective, tracking))
        events = self.context.Queue()
        workers = {i: self._start(payload, slot, events) for i, slot in enumerate(slots)}
        restarts = 0
        try:
            while workers:
                try:
                    _hear(events.get(timeout=0.5), listener)
                    continue
                except queue.Empty:
                    pass
                for index, process in list(workers.items()):
                    if process.exitcode is None:
                        continue
                    del workers[index]
                    if process.exitcode in (0, _REFUSED):  # done, or refused: its message is on the way
                        continue
                    self.driver.fail_worker(study, self.tracker, worker_name(process.pid))
                    if restarts >= self.max_restarts:
                        raise HpoError(f"--workers: workers keep dying ({restarts + 1} so far, the last "
                                       f"{_how(process.exitcode)}); their output above says why")
                    restarts += 1
                    workers[index] = self._start(payload, slots[index], events)
        finally:
            self._stop(list(workers.values()), study)
        while True:  # trials that ended just before their worker did
            try:
                _hear(events.get(timeout=0.1), listener)
            except queue.Empty:
                break

    def _start(self, payload: bytes, slot: DeviceSlot, events: Any) -> Any:
        process = self.context.Process(target=_worker_main, args=(payload, slot, events), name=f"hpo-{slot.name}")
        process.start()
        return process

    def _stop(self, processes: list[Any], study: optuna.Study) -> None:
        """Stop workers still running: each closes its trial as "interrupted"; one that takes
        longer than ``STOP_TIMEOUT_S`` is killed and its trial closed here."""
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.exitcode is None:
                process.kill()
                process.join()
            self.driver.fail_worker(study, self.tracker, worker_name(process.pid), reason=INTERRUPTED)


def _how(exitcode: int) -> str:
    return f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"with exit code {exitcode}"


def _hear(event: Any, listener: SearchListener) -> None:
    if isinstance(event, _Refused):
        raise HpoError(str(event))
    listener.trial_finished(event)


def _detached(driver: OptunaDriver) -> OptunaDriver:
    """A copy of the driver to ship to a worker, without the parent's slots or context."""
    clone = copy.copy(driver)
    clone.slots, clone.context = [], None
    return clone
