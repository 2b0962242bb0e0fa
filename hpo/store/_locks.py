"""The study's lock: one process at a time claims a trial (reads the history, starts the next
one) or ends one (finishes it, or fails it as lost)."""

from __future__ import annotations

from typing import Any

from hpo._errors import HpoError
from hpo.files import store_lock


def claim_lock(url: str, study_name: str) -> Any:
    """The study's lock on its storage (``store_lock``). Other databases than SQLite and
    PostgreSQL are refused: without a lock, two workers could claim the same grid point or one
    trial too many."""
    lock = store_lock(url, "claim", study_name)
    if lock is None:
        scheme = url.partition("://")[0]
        raise HpoError(f"hpo claims trials under a lock it takes on SQLite files and PostgreSQL; "
                       f"{scheme!r} is neither", argument="storage")
    return lock
