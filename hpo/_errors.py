"""The one exception type for mistakes a user can fix (bad file, bad argument, bad name)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class HpoError(Exception):
    """A user error: the CLI prints it on one line and exits with code 2, no traceback.

    ``argument`` names what is at fault as the Python API calls it (``n_trials``); the message
    then reads ``n_trials: must be at least 1``, and the CLI names its flag instead
    (``--trials: must be at least 1``).
    """

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.argument = argument

    def __str__(self) -> str:
        return f"{self.argument}: {self.message}" if self.argument else self.message

    def __reduce__(self) -> tuple[Any, ...]:  # travels from a worker process to its parent
        return _rebuild, (self.message, self.argument)


def _rebuild(message: str, argument: str | None) -> HpoError:
    return HpoError(message, argument=argument)


def unknown(kind: str, name: str, choices: Iterable[str], *, listed_as: str = "choose from") -> str:
    """The line for a ``name`` that is not one of ``choices`` (``unknown pruner 'medain' (did you
    mean 'median'? choose from ...)``)."""
    return f"unknown {kind} {name!r} {choices_hint(name, choices, listed_as)}"


def choices_hint(name: str, choices: Iterable[str], listed_as: str) -> str:
    """``(did you mean 'x'? LISTED_AS a, b, c)``: the choice closest to ``name`` first, if one is
    close, then all of them."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    if not close and len(started := [c for c in choices if c.startswith(str(name)) and name]) == 1:
        close = started  # 'min' for minimize, 'succ' for successive-halving
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"({guess}{listed_as} {', '.join(choices)})"


def yaml_scalar(value: Any) -> str:
    """``value`` as YAML reads it back (``1.0e-05``: PyYAML takes ``1e-05`` for a string)."""
    if isinstance(value, float) and "e" in repr(value) and "." not in repr(value).split("e")[0]:
        mantissa, exponent = repr(value).split("e")
        return f"{mantissa}.0e{exponent}"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
