"""MLflow writes off the training path: one background thread per tracker does them in the
order they were asked, while training only queues them."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("hpo")

Write = Callable[[Any], None]
"""One write, given the MLflow client."""

RETRIES_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""How long the writer waits before each retry of a write that failed (a tracking server that
is restarting, a locked SQLite file)."""


class Writer:
    """Runs writes on a background thread, first in, first out; ``flush`` waits for all of them.

    A write that keeps failing after its retries is dropped and counted (``failures``), so that
    training never stops for MLflow.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.failures: list[str] = []
        self._queue: queue.Queue[Write] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def idle(self) -> bool:
        """Nothing is waiting to be written."""
        return self._idle.is_set() and self._queue.empty()

    def submit(self, write: Write) -> None:
        with self._guard:
            self._idle.clear()
            self._queue.put(write)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hpo-mlflow", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Wait until every write asked so far is done (or dropped)."""
        if self._thread is not None:
            self._queue.join()

    def _run(self) -> None:
        while True:
            write = self._queue.get()
            try:
                self._do(write)
            finally:
                self._queue.task_done()
                if self._queue.empty():
                    self._idle.set()

    def _do(self, write: Write) -> None:
        for wait in (*RETRIES_S, None):
            try:
                write(self.client)
                return
            except Exception as error:
                if wait is None:
                    message = f"{type(error).__name__}: {error}".splitlines()[0]
                    self.failures.append(message)
                    logger.warning("hpo: an MLflow write failed after %d tries: %s", len(RETRIES_S) + 1, message)
                    return
                time.sleep(wait)
