"""Strategies decide what to try next: grid, random, coarse-to-fine, and TPE from the engine."""

from __future__ import annotations

from hpo._errors import HpoError
from hpo.strategies._base import WAIT, BaseStrategy, EngineStrategy, Suggestion, params_key
from hpo.strategies._coarse_to_fine import CoarseToFineStrategy
from hpo.strategies._grid import GridStrategy
from hpo.strategies._random import RandomStrategy
from hpo.strategies._tpe import TpeStrategy

STRATEGIES: dict[str, type[BaseStrategy] | type[EngineStrategy]] = {
    cls.name: cls for cls in (GridStrategy, RandomStrategy, CoarseToFineStrategy, TpeStrategy)
}


def make_strategy(name: str | BaseStrategy | EngineStrategy, seed: int = 0) -> BaseStrategy | EngineStrategy:
    """A strategy by its name on the command line (or one already made); an unknown name is a user error."""
    if isinstance(name, (BaseStrategy, EngineStrategy)):
        return name
    try:
        return STRATEGIES[name](seed)
    except KeyError:
        raise HpoError(f"--strategy: unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})") from None


__all__ = [
    "STRATEGIES",
    "WAIT",
    "BaseStrategy",
    "CoarseToFineStrategy",
    "EngineStrategy",
    "GridStrategy",
    "RandomStrategy",
    "Suggestion",
    "TpeStrategy",
    "make_strategy",
    "params_key",
]
