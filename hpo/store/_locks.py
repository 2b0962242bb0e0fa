"""The study's lock: one process at a time claims a trial (reads the history, starts the next
one) or ends one (finishes it, or fails it as lost)."""

from __future__ import annotations

import logging
from typing import Any

from hpo._errors import HpoError
from hpo.files import lock_holder, store_lock

logger = logging.getLogger("hpo")

STUDY_LOCK_S = 45.0
"""The longest a process waits for the study's lock. hpo holds it to claim or end trials, a
second or so (a population of a thousand TPE trials on a long history, some seconds): a process
that keeps it a minute is stopped or hung, and its peers say so instead of waiting for ever."""


SAID_AFTER_S = 10.0
"""How long a process waits for the study's lock before it says that it waits, and for whom."""


class StudyLock:
    """The study's lock on its storage (``store_lock``): waited for at most ``STUDY_LOCK_S``
    (said after ``SAID_AFTER_S``), then refused in one line that names the process holding it
    where this machine can tell.
    Other databases than SQLite and PostgreSQL are refused: without a lock, two workers could
    claim the same grid point or one trial too many."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url = url
        self.study_name = study_name
        self._lock = store_lock(url, "claim", study_name)
        if self._lock is None:
            scheme = url.partition("://")[0]
            raise HpoError(f"hpo claims trials under a lock it takes on SQLite files and PostgreSQL; "
                           f"{scheme!r} is neither", argument="storage")

    def __enter__(self) -> None:
        said_after = min(SAID_AFTER_S, STUDY_LOCK_S)
        try:
            self._lock.acquire(timeout=said_after)
            return
        except TimeoutError:
            holder = lock_holder(self._lock)
            logger.warning("hpo: waiting for the lock of study %r, which another process has held for %g s%s",
                           self.study_name, said_after, f" ({holder})" if holder else "")
        try:
            self._lock.acquire(timeout=STUDY_LOCK_S - said_after)
        except TimeoutError:
            holder = lock_holder(self._lock)
            raise HpoError(
                f"another process has held the lock of study {self.study_name!r} on {self.url} for {STUDY_LOCK_S:g} s"
                f"{f' ({holder})' if holder else ''}, where hpo holds it a second or so to claim or end trials: "
                "end or resume that process, then run again", argument="storage") from None

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()
