"""The driver interface: an engine that runs a search's trials through the trial loop."""

from __future__ import annotations

import abc
import difflib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hpo._errors import HpoError

if TYPE_CHECKING:
    from hpo.loop import TrialLoop


def flags_of(model: type[BaseModel]) -> dict[str, str]:
    """Each field's command-line flag: ``--field-name``, or the field's own ``flag``
    (``json_schema_extra={"flag": ...}``); a field whose ``flag`` is None has none."""
    flags = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = extra.get("flag", f"--{name.replace('_', '-')}")
        if flag is not None:
            flags[name] = str(flag)
    return flags


class DriverOptions(BaseModel):
    """How and where an engine runs trials: one typed, validated object per engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    time_limits: ClassVar[bool] = False
    """Whether the engine ends a trial that runs past ``trial_timeout``."""

    def __init__(self, **given: Any) -> None:
        """The options given; the first mistake is one ``HpoError`` naming its option
        (``max_concurrent: must be more than 0, got 0``), as the search's own settings are."""
        try:
            super().__init__(**given)
        except ValidationError as error:
            first = error.errors()[0]
            option = str(first["loc"][0])
            if first["type"] == "extra_forbidden":
                close = difflib.get_close_matches(option, list(type(self).model_fields), n=1)
                guess = f"; did you mean {close[0]!r}?" if close else ""
                raise HpoError(f"{type(self).__name__}: unexpected keyword argument {option!r}{guess}") from None
            must = {"greater_than": "more than {gt:g}", "greater_than_equal": "at least {ge:g}", "int_parsing": "a "
                    "whole number", "float_parsing": "a number"}.get(first["type"])
            said = f"must be {must.format(**first.get('ctx', {}))}, got {first['input']}" if must else first["msg"]
            raise HpoError(said, argument=option) from None

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Each option's command-line flag: ``--field-name``, or the field's own ``flag``."""
        return flags_of(cls)

    @classmethod
    def keywords(cls) -> dict[str, str]:
        """Each option by its flag as a keyword (``ray_address`` for ``--ray-address``): its field."""
        return {flag.lstrip("-").replace("-", "_"): name for name, flag in cls.flags().items()}

    @abc.abstractmethod
    def make(self, home: Path) -> Driver:
        """The driver, with everything the options imply checked (GPUs named exist, ...);
        ``home`` is where the search keeps its files (``.hpo``)."""


class Driver(abc.ABC):
    """Runs trials until the budget is spent: claims, runs and finishes them with the loop."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """The torch device kind trials run on (``cpu``, ``cuda:0``): the best configuration's
        test runs on the same."""

    def clock(self) -> float:
        """Now, in the seconds the search's ``timeout`` counts: the wall clock (``time.time``),
        but for a driver that simulates time."""
        return time.time()

    def start(self) -> None:
        """Reach what the engine runs on (a cluster), before the search writes anything: one
        that cannot be reached is refused in one line (``HpoError``). Nothing to reach by default."""
        return

    @abc.abstractmethod
    def run(self, loop: TrialLoop, objective: Callable[..., Any], population: int | str = 1) -> None:
        """Run trials until the budget is claimed and every trial of it has ended; claim and
        train ``population`` at a time where the options say the engine can."""
