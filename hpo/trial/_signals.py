"""Stopping a search from outside — Ctrl-C (SIGINT), SIGTERM — told apart from an objective's own
``KeyboardInterrupt`` or ``SystemExit``, and a trial's time limit."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP = threading.Event()
"""Set when a stop signal reached this process: a ``KeyboardInterrupt`` then stops the search,
where one an objective raises by itself only fails its trial."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, Docker, Slurm): the search stops as for Ctrl-C."""


class TrialTimeout(BaseException):
    """A trial ran past its time limit. A ``BaseException``, so that an objective's own
    ``except Exception`` does not swallow it."""


def _on_sigint(signum: int, frame: Any) -> None:
    STOP.set()
    raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once, and first: a second one inside STOP.set() would hang
    STOP.set()
    raise Terminated


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While a search runs: Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM ``Terminated``, each
    marked as a stop from outside (in the main thread; elsewhere Python delivers no signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()
    before = signal.signal(signal.SIGINT, _on_sigint), signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def stop_requested() -> bool:
    return STOP.is_set()


def _on_alarm(signum: int, frame: Any) -> None:
    raise TrialTimeout


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``TrialTimeout`` in this (main) thread after ``seconds``. Python code is interrupted
    where it runs; a call hung inside C code only when it returns (a worker pool's parent kills
    such a worker instead)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
