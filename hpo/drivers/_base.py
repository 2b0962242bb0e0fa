"""The driver interface: an engine that runs a search's trials through the trial loop."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from hpo._options import OneLineModel

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


class DriverOptions(OneLineModel):
    """How and where an engine runs trials: one typed, validated object per engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    time_limits: ClassVar[bool] = False
    """Whether the engine ends a trial that runs past ``trial_timeout``."""

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
