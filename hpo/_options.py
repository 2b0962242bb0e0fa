"""The API's option objects (``hpo.RayOptions``, ``hpo.Pruning``): pydantic models whose mistakes
are one ``HpoError``, as every other mistake of the API is (kept apart from ``hpo._errors``, which
``import hpo`` loads: pydantic is loaded once options are)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from hpo._errors import HpoError, choices_hint, unknown


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
