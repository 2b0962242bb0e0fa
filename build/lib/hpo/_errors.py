"""The one exception type for mistakes a user can fix (bad file, bad flag, bad name)."""

from __future__ import annotations


class HpoError(Exception):
    """A user error: the CLI prints it on one line and exits with code 2, no traceback."""
