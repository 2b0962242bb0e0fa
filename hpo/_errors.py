"""The one exception type for mistakes a user can fix (bad file, bad argument, bad name)."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError


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
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"({guess}{listed_as} {', '.join(choices)})"


class _OneLineCalls(type(BaseModel)):  # type: ignore[misc]
    """Pydantic's metaclass, with the user's call of the class answered in one line. A model
    nested in another (``pruning:`` in a space file) is validated without that call, so that its
    mistakes are reported as the file's."""

    def __call__(cls, *args: Any, **given: Any) -> Any:
        try:
            return super().__call__(*args, **given)
        except ValidationError as error:
            raise _refusal(cls, error.errors()[0]) from None


class OneLineModel(BaseModel, metaclass=_OneLineCalls):
    """Options a user makes by hand in the API (``hpo.RayOptions``, ``hpo.Pruning``): the first
    mistake is one ``HpoError`` naming its field, in hpo's words (``max_concurrent: must be more
    than 0, got 0``), not pydantic's report of four lines."""


def _refusal(model: type[BaseModel], first: Any) -> HpoError:
    field = str(first["loc"][0])
    if first["type"] == "extra_forbidden":
        guess = choices_hint(field, model.model_fields, "its arguments:")
        return HpoError(f"{model.__name__}: unexpected keyword argument {field!r} {guess}")
    if first["type"] == "literal_error":
        choices = [str(c) for c in typing.get_args(model.model_fields[field].annotation)]
        return HpoError(unknown(field.replace("_", " "), first["input"], choices), argument=field)
    must = {"greater_than": "more than {gt:g}", "greater_than_equal": "at least {ge:g}", "int_parsing": "a whole "
            "number", "float_parsing": "a number"}.get(first["type"])
    said = f"must be {must.format(**first.get('ctx', {}))}, got {first['input']}" if must else first["msg"]
    return HpoError(said, argument=field)
