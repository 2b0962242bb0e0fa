"""MLflow writes off the training path: one background thread per tracker does them in the
order they were asked, while training only queues them, and waits out a tracking server that
is down. Writes to trials' runs queued one after another are done as one batch, gathered for
up to ``GATHER_S`` (a trial's run created, logged to and ended costs one transaction, not three)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hpo.files import LOCKED, locked_by, sqlite_path
from hpo.tracking._runs import RunWrite, run_writer

logger = logging.getLogger("hpo")

Write = Callable[[Any], None]
"""One write, given the MLflow client."""
BATCH_LIMIT = 512
"""The most run writes done as one batch."""
GATHER_S = 0.25
"""How long a batch of run writes waits for more to join it, unless someone waits for it
(``flush``): what the MLflow UI shows lags training by at most this."""

RETRIES_S = (0.5, 1.0, 2.0, 4.0)
"""Waits before each retry of a write that failed (a server restarting, a locked SQLite file)."""
OUTAGE_RETRY_S = 10.0
"""While the tracking server cannot be reached, how long the writer waits between tries."""
FLUSH_LIMIT_S = 60.0
"""How long the end of a search waits for writes held up by an outage before leaving them to
the next run's repair (which rewrites each trial's run from the study)."""


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking server cannot be reached (as opposed to a refused write)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    text = str(error)
    return bool(names & {"ConnectionError", "Timeout", "MaxRetryError", "NewConnectionError"}) or any(
        phrase in text for phrase in ("Max retries exceeded", "Connection refused", "Failed to establish",
                                      "Read timed out", "API request to")
    )


class Writer:
    """Runs writes on a background thread, first in, first out; ``flush`` waits for them.

    A write that fails is retried a few times; while the server cannot be reached, it is
    retried every ``OUTAGE_RETRY_S`` for as long as the search runs (training goes on
    meanwhile). ``flush`` waits at most ``limit_s`` for such writes; those left are counted in
    ``pending``. A write refused for another reason is dropped and counted in ``failures``.
    Run writes (``RunWrite``) queued one after another are written together, by ``write_runs``;
    a batch refused for good is tried again run by run. Runs are made under a lock on MLflow's
    store, or on ``lock_url`` (the study's storage) where it has none (a tracking server).
    """

    def __init__(self, client: Any, lock_url: str | None = None) -> None:
        self.client = client
        self.lock_url = lock_url
        self.failures: list[str] = []
        self.pending = 0
        self.run_writer = run_writer(client)
        self._queue: queue.Queue[Write | RunWrite] = queue.Queue()
        self._held: Write | None = None  # taken off the queue after a batch of run writes: next in line
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._abandon = threading.Event()  # set when the end of the search stops waiting
        self._hurry = threading.Event()  # set while someone waits in flush: batches stop gathering
        self.outage_since: float | None = None
        self._gave_up: float | None = None  # the outage (its start) a flush stopped waiting for

    def write_runs(self, client: Any, writes: Sequence[RunWrite]) -> None:
        """``writes`` now, in this thread, as one batch."""
        self.run_writer(client, writes, self.lock_url)

    @property
    def idle(self) -> bool:
        """Nothing is waiting to be written."""
        return self._idle.is_set() and self._queue.empty()

    def submit(self, write: Write | RunWrite) -> None:
        with self._guard:
            self._idle.clear()
            self._abandon.clear()
            self._queue.put(write)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hpo-mlflow", daemon=True)
                self._thread.start()

    def flush(self, limit_s: float | None = None) -> bool:
        """Wait until every write asked so far is done (or dropped); with ``limit_s``, at most
        that long while the server is unreachable, and not at all once a flush has waited out
        the same outage. Returns whether everything was written."""
        if self._thread is None:
            return True
        deadline = None if limit_s is None else time.monotonic() + limit_s
        if deadline is not None and self.outage_since is not None and self._gave_up == self.outage_since:
            deadline = time.monotonic()  # this outage has had its wait: the end of a search waits once
        self._hurry.set()
        try:
            while not self.idle:
                if deadline is not None and time.monotonic() > deadline and self.outage_since is not None:
                    self._gave_up = self.outage_since
                    self._abandon.set()
                    while not self.idle:  # the writer drops what is queued, counting it
                        time.sleep(0.05)
                    return False
                time.sleep(0.02)
        finally:
            self._hurry.clear()
        return True

    def _run(self) -> None:
        while True:
            write = self._next()
            try:
                if self._abandon.is_set():
                    self.pending += len(write) if isinstance(write, list) else 1
                elif isinstance(write, list):
                    self._write_runs(write)
                else:
                    self._do(write)
            finally:
                if self._held is None and self._queue.empty():
                    self._idle.set()

    def _next(self) -> Write | list[RunWrite]:
        """The next write, or the run writes queued one after another from here (gathered for up
        to ``GATHER_S``)."""
        first, self._held = self._held or self._queue.get(), None
        if not isinstance(first, RunWrite):
            return first
        batch = [first]
        gathered_by = time.monotonic() + GATHER_S
        while len(batch) < BATCH_LIMIT:
            try:
                write = self._queue.get_nowait()
            except queue.Empty:
                wait = gathered_by - time.monotonic()
                if wait <= 0 or self._hurry.is_set() or self._abandon.is_set():
                    break
                try:
                    write = self._queue.get(timeout=min(wait, 0.02))
                except queue.Empty:
                    continue
            if not isinstance(write, RunWrite):
                self._held = write
                break
            batch.append(write)
        return batch

    def _write_runs(self, batch: list[RunWrite]) -> None:
        """Run writes in one go; where that is refused for good, run by run, so that a write
        MLflow refuses loses no other run's (a refused batch wrote nothing, or, through the
        client, what writing again leaves as it is)."""
        runs: dict[int, list[RunWrite]] = {}
        for write in batch:
            runs.setdefault(id(write.run), []).append(write)
        if self._do(lambda client: self.write_runs(client, batch), count=len(batch), alone=len(runs) == 1):
            return
        if len(runs) > 1 and not self._abandon.is_set():
            for writes in runs.values():
                self._do(lambda client, writes=writes: self.write_runs(client, writes), count=len(writes))

    def waiting_on(self, error: BaseException) -> str:
        """What keeps MLflow from writing for now, where writes should wait for it: a tracking
        server that cannot be reached, an SQLite store another process keeps locked; else empty."""
        if unreachable(error):
            return f"the MLflow tracking server cannot be reached ({str(error).splitlines()[0][:200]})"
        path = sqlite_path(self.client.tracking_uri)
        if path is not None and LOCKED in str(error):
            return f"the MLflow store {locked_by(path)}"
        return ""

    def _do(self, write: Write, *, count: int = 1, alone: bool = True) -> bool:
        """Do ``write`` (``count`` queued writes), retrying as the class says; whether it was
        done. A failure is counted only when ``alone`` (nothing else will try it)."""
        tries = 0
        while True:
            try:
                write(self.client)
                if self.outage_since is not None:
                    logger.warning("hpo: MLflow takes writes again, after %.0f s", time.monotonic() - self.outage_since)
                self.outage_since = None
                return True
            except Exception as error:
                tries += 1
                if waits_for := self.waiting_on(error):
                    if self.outage_since is None:
                        self.outage_since = time.monotonic()
                        logger.warning("hpo: %s; training goes on and its writes wait", waits_for)
                    if self._abandon.wait(OUTAGE_RETRY_S):
                        self.pending += count
                        return False
                    continue
                if tries > len(RETRIES_S):
                    if alone:
                        message = f"{type(error).__name__}: {error}".splitlines()[0]
                        self.failures.append(message)
                        logger.warning("hpo: an MLflow write failed after %d tries: %s", tries, message)
                    return False
                time.sleep(RETRIES_S[tries - 1])
