"""The strategy interface: decide the next configuration from the trials so far."""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hpo._trial import TrialRecord
from hpo.spaces import SearchSpace


@dataclass(frozen=True)
class Suggestion:
    """The next configuration to try, and the stage it belongs to."""

    params: dict[str, Any]
    stage: int = 0


WAIT = Suggestion({}, -1)
"""Returned by ``suggest`` when the next trial depends on trials still running (a new
coarse-to-fine stage); the engine asks again once one of them has finished."""


class BaseStrategy(abc.ABC):
    """Plans configurations independently of the engine that runs them.

    A strategy keeps no state of its own: the next suggestion is a function of the space,
    the seed, the budget and the trials so far. That is what makes a resumed or a shared
    study continue exactly where it stopped, on any engine.
    """

    name: ClassVar[str]

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abc.abstractmethod
    def suggest(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int
    ) -> Suggestion | None:
        """The configuration for trial ``len(history)``, ``None`` when the strategy is done, or
        ``WAIT`` when it cannot decide before running trials finish.

        ``history`` holds every trial that counts against the budget, running ones included.
        """


class EngineStrategy:
    """A model-based strategy that the engine itself provides (TPE); no planning in ``hpo``."""

    name: ClassVar[str]

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed


def params_key(params: dict[str, Any]) -> str:
    """A hashable identity for a configuration."""
    return json.dumps(params, sort_keys=True)
