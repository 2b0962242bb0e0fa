"""The study's lock: one process at a time claims a trial (reads the history, starts the next
one) or ends one (finishes it, or fails it as lost)."""

from __future__ import annotations

import hashlib
from typing import Any

import filelock

from hpo._errors import HpoError
from hpo.files import sqlite_path


def claim_lock(url: str, study_name: str) -> Any:
    """A lock file beside an SQLite storage (one machine), a PostgreSQL advisory lock keyed by
    the study (every machine on the database). Other databases are refused: without a lock,
    two workers could claim the same grid point or one trial too many."""
    path = sqlite_path(url)
    if path is not None:
        return filelock.FileLock(f"{path}.claim.lock")
    if url.startswith("postgresql"):
        return AdvisoryLock(url, study_name)
    scheme = url.partition("://")[0]
    raise HpoError(f"hpo claims trials under a lock it takes on SQLite files and PostgreSQL; "
                   f"{scheme!r} is neither", argument="storage")


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, on a connection of its own."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._engine: Any = None
        self._connection: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None, "_connection": None}

    def __enter__(self) -> None:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.url, pool_size=1, max_overflow=0)
        self._connection = self._engine.connect()
        self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})

    def __exit__(self, *exc: object) -> None:
        import sqlalchemy

        try:
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        finally:
            self._connection.close()
