"""A pool of long-lived worker processes, each pinned to a device slot. The pool knows processes,
not trials: it hands each worker its slot, relays what workers send, replaces one that dies and
says so, and stops them all when the search ends."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hpo._errors import HpoError
from hpo.dispatch._slots import DeviceSlot
from hpo.trial import STOP

STOP_TIMEOUT_S = 30.0
"""How long a stopped worker may take to close its running trial before it is killed."""
_REFUSED = 2  # a worker's exit code after it sent the parent a user error

WorkerMain = Callable[[DeviceSlot, Any], None]
"""What a worker runs: ``main(slot, events)``, with ``events.put(...)`` reaching the parent. It
must pickle (a module-level function, or a ``functools.partial`` of one)."""


class _Refused:
    """A worker's message to the parent: a user error (the objective's setup failed, say) that
    every worker would meet alike, so the search stops with it instead of replacing workers."""

    def __init__(self, error: HpoError) -> None:
        self.error = error


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM from the parent (or sent when the parent died): stop as Ctrl-C would, once. The
    next SIGTERMs are ignored before anything else: one arriving inside ``STOP.set()`` would run
    this handler again while the event's lock is held, and hang the worker for good."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    STOP.set()
    raise KeyboardInterrupt


def _die_with(search: int) -> None:
    """Stop this worker (SIGTERM, as Ctrl-C in the search would) once the search's process is
    gone, killed or not, so that a worker never goes on claiming trials for a search that is
    gone. The kernel's parent-death signal cannot say so: a worker's parent is the fork server,
    which outlives the search while the workers it forked live. A thread waits on the search's
    process instead (its pidfd, Linux 5.3+; else a look every second)."""
    try:
        watched = os.pidfd_open(search)
    except ProcessLookupError:  # gone already
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except (AttributeError, OSError):
        watched = None
    threading.Thread(target=_stop_when_gone, args=(search, watched), name="hpo-search-watch", daemon=True).start()


def _stop_when_gone(search: int, watched: int | None) -> None:
    if watched is None:
        while _alive(search):
            time.sleep(1.0)
    else:
        ended = select.poll()
        ended.register(watched, select.POLLIN)  # readable once the process has ended
        ended.poll()
    os.kill(os.getpid(), signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _process_main(main: WorkerMain, slot: DeviceSlot, events: Any, search: int, environ: dict[str, str]) -> None:
    """A worker process: take the search's environment as it is now, pin the slot, then run ``main``.

    Ctrl-C reaches the whole process group; the search's process alone answers it, stopping each
    worker with SIGTERM, which ``main`` meets as ``KeyboardInterrupt`` (ending its trial as
    interrupted). A worker whose search died sends itself the same SIGTERM, and leaves without
    waiting for anyone to read what it sent.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.clear()  # the fork server's is the one the search had when the server started
    os.environ.update(environ)
    try:
        _die_with(search)
        main(slot.pin(), events)
    except KeyboardInterrupt:
        sys.exit(130)
    except HpoError as error:
        events.put(_Refused(error))
        sys.exit(_REFUSED)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # leaving: nothing left to close
        if not _alive(search):
            events.cancel_join_thread()  # nobody reads them any more: do not wait to flush them


class WorkerPool:
    """Runs ``main`` in one process per slot until every worker has returned.

    A worker that exits abnormally (killed, crashed) is reported to ``on_lost(pid)`` and
    replaced, at most ``max_restarts`` times in all. When the search stops early (Ctrl-C, an
    error), every worker still running is stopped and reported to ``on_stopped(pid)``.
    """

    def __init__(
        self,
        slots: list[DeviceSlot],
        main: WorkerMain,
        *,
        on_event: Callable[[Any], None],
        on_lost: Callable[[int], None],
        on_stopped: Callable[[int], None],
        on_tick: Callable[[WorkerPool], None] | None = None,
        max_restarts: int | None = None,
    ) -> None:
        self.slots = slots
        self.main = main
        self.on_event = on_event
        self.on_lost = on_lost
        self.on_stopped = on_stopped
        self.on_tick = on_tick
        self._replaced: set[int] = set()  # workers killed on purpose: replaced, not counted as dying
        self.max_restarts = 2 * len(slots) if max_restarts is None else max_restarts
        self.context = _forkserver(main)
        self.started: set[int] = set()
        """Every worker process it started (their PIDs), those it replaced included."""

    def run(self) -> None:
        events = self.context.Queue()
        workers = {i: self._start(slot, events) for i, slot in enumerate(self.slots)}
        restarts = 0
        try:
            while workers:
                try:
                    self._hear(events.get(timeout=0.5))
                    continue
                except queue.Empty:
                    pass
                if self.on_tick is not None:
                    self.on_tick(self)
                for index, process in list(workers.items()):
                    if process.exitcode is None:
                        continue
                    del workers[index]
                    if process.exitcode in (0, _REFUSED):  # done, or refused: its message is on the way
                        continue
                    self.on_lost(process.pid)
                    if process.pid in self._replaced:
                        workers[index] = self._start(self.slots[index], events)
                        continue
                    if restarts >= self.max_restarts:
                        raise HpoError(f"workers keep dying ({restarts + 1} so far, the last "
                                       f"{_how(process.exitcode)}); their output above says why", argument="workers")
                    restarts += 1
                    workers[index] = self._start(self.slots[index], events)
        finally:
            self._stop(list(workers.values()))
        while True:  # what workers sent just before they ended
            try:
                self._hear(events.get(timeout=0.1))
            except queue.Empty:
                break

    def replace(self, pid: int) -> None:
        """Kill worker ``pid`` (its trial hangs) and start another in its slot."""
        self._replaced.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _hear(self, event: Any) -> None:
        if isinstance(event, _Refused):
            raise event.error
        self.on_event(event)

    def _start(self, slot: DeviceSlot, events: Any) -> Any:
        process = self.context.Process(target=_process_main,
                                       args=(self.main, slot, events, os.getpid(), dict(os.environ)),
                                       name=f"hpo-{slot.name}")
        with _main_script_not_rerun():
            process.start()
        self.started.add(process.pid)
        return process

    def _stop(self, processes: list[Any]) -> None:
        """Stop workers still running: each closes its trial as interrupted; one that takes
        longer than ``STOP_TIMEOUT_S`` is killed. Each is then reported to ``on_stopped``."""
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.exitcode is None:
                process.kill()
                process.join()
            self.on_stopped(process.pid)


def _forkserver(main: WorkerMain) -> Any:
    """Workers forked from a server process that has imported ``main``'s module (hpo, Optuna,
    MLflow: some 2 s of CPU) once, for the whole search and every worker it replaces. The server
    is a fresh interpreter that imports nothing else: no CUDA state, locks or database
    connections reach a worker, as with ``spawn``. A server already running (this process's
    earlier search, or the user's own) is reused."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([getattr(main, "func", main).__module__])
    return context


@contextlib.contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """Start a worker without running the user's script again. A worker first runs the parent's
    ``__main__`` module (multiprocessing prepares a fork server's child as a spawned one), which,
    in a script without an ``if __name__ == "__main__":`` guard, starts the search again;
    workers need nothing from it (what they run travels pickled, by value where it was defined
    in the script), so the script is hidden meanwhile."""
    main = sys.modules["__main__"]
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    main.__spec__ = None
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _how(exitcode: int) -> str:
    return f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"with exit code {exitcode}"
