"""The strategy interface: decide the next configuration from the trials so far."""

from __future__ import annotations

import abc
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hpo.spaces import SearchSpace
from hpo.trial import TrialRecord


@dataclass(frozen=True)
class Suggestion:
    """The next configuration to try, and the stage it belongs to."""

    params: dict[str, Any]
    stage: int = 0


WAIT = Suggestion({}, -1)
"""Returned by ``suggest`` when the next trial depends on trials still running (a new
coarse-to-fine stage); the engine asks again once one of them has finished."""


class _Settings:
    """Strategies are made from keyword settings alone, and say what they were made with, so
    that a study can save its strategy and any process that joins it can make it again."""

    name: ClassVar[str]
    group_share: ClassVar[int | None] = 2
    """How many trials a population of K takes from one group of shape parameters (batch size,
    width...), in Ks: its first K and one refill of each row, after which it drains and the next
    population draws its group afresh, so that every group is a draw of its own; never more than
    half the budget beyond the first K (``hpo.loop.group_quota``). None: as many as the strategy
    has (a grid's groups are its own)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def max_trials(self, space: SearchSpace) -> int | None:
        """The most trials it has for ``space`` in all (a grid's points); None: no end."""
        return None

    def get_params(self) -> dict[str, Any]:
        """The arguments of the constructor, as this strategy was made (scikit-learn's rule:
        each one is stored under its own name)."""
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        return {name: getattr(self, name) for name in names}


class BaseStrategy(_Settings, abc.ABC):
    """Plans configurations independently of the engine that runs them.

    A strategy keeps no state of its own: the next suggestion is a function of the space,
    the seed, the budget and the trials so far. That is what makes a resumed or a shared
    study continue exactly where it stopped, on any engine.
    """

    @abc.abstractmethod
    def suggest(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int
    ) -> Suggestion | None:
        """The configuration for trial ``len(history)``, ``None`` when the strategy is done, or
        ``WAIT`` when it cannot decide before running trials finish.

        ``history`` holds every trial that counts against the budget, running ones included.
        """

    def suggest_like(
        self, space: SearchSpace, history: Sequence[TrialRecord], n_trials: int, like: dict[str, Any]
    ) -> Suggestion | None:
        """The next configuration that shares ``like``'s values (a population's shape
        parameters, which its members share), else None. By default, the next suggestion where
        it shares them: a strategy that can choose among its next trials does better."""
        suggestion = self.suggest(space, history, n_trials)
        if suggestion is None or suggestion is WAIT or shares(suggestion.params, like):
            return suggestion
        return None


class SamplerStrategy(_Settings):
    """A model-based strategy that an Optuna sampler implements (TPE): the trial store samples
    it when a trial is claimed, for every engine; there is no planning in ``hpo`` itself."""


def shares(params: dict[str, Any], like: dict[str, Any]) -> bool:
    """Whether a configuration has ``like``'s value for each parameter it sets."""
    return all(params.get(name, value) == value for name, value in like.items())


def params_key(params: dict[str, Any]) -> str:
    """A hashable identity for a configuration."""
    return json.dumps(params, sort_keys=True)
