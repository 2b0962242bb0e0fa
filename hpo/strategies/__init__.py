"""Strategies decide what to try next: grid, random, coarse-to-fine (planned here), TPE and GP
(sampled by Optuna in the trial store)."""

from __future__ import annotations

import pkgutil
from typing import Any

from hpo._errors import HpoError, unknown
from hpo.spaces import SearchSpace
from hpo.strategies._base import WAIT, BaseStrategy, SamplerStrategy, Suggestion, params_key
from hpo.strategies._coarse_to_fine import CoarseToFineStrategy
from hpo.strategies._gp import GpStrategy
from hpo.strategies._grid import GridStrategy
from hpo.strategies._random import RandomStrategy
from hpo.strategies._tpe import TpeStrategy

Strategy = BaseStrategy | SamplerStrategy
STRATEGIES: dict[str, type[BaseStrategy] | type[SamplerStrategy]] = {
    cls.name: cls for cls in (GridStrategy, RandomStrategy, CoarseToFineStrategy, TpeStrategy, GpStrategy)
}


AUTO = "auto"
"""The default: the strategy that led on spaces like the one searched (``auto_strategy``)."""
NAMES = [AUTO, *STRATEGIES]
"""Every name ``make_strategy`` takes."""


def auto_strategy(space: SearchSpace) -> str:
    """What ``auto`` runs on ``space``: coarse-to-fine for one or two searched parameters (the
    coarse sweep of learning rate and weight decay, then finer, as practitioners tune them; it led
    TPE on the two-parameter MNIST-1D and digits searches), TPE for more (it led on the public
    FC-Net tables cut to three and six parameters and whole, nine; docs/benchmarks.md)."""
    return CoarseToFineStrategy.name if len(space.params) <= 2 else TpeStrategy.name


def make_strategy(name: str | Strategy, seed: int, space: SearchSpace) -> Strategy:
    """A strategy by its name (``auto``: the one for ``space``), or one already made; an
    unknown name is a user error."""
    if isinstance(name, (BaseStrategy, SamplerStrategy)):
        return name
    if name == AUTO:
        name = auto_strategy(space)
    try:
        return STRATEGIES[name](seed)
    except KeyError:
        raise HpoError(unknown("strategy", name, NAMES), argument="strategy") from None


def strategy_spec(strategy: Strategy) -> dict[str, Any]:
    """The strategy as data: its class and every setting it was made with."""
    cls = type(strategy)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "settings": strategy.get_params()}


def strategy_from_spec(spec: dict[str, Any]) -> Strategy:
    """The strategy ``strategy_spec`` describes, made again in this process."""
    where = spec["class"]
    if where.startswith("__main__:") or "<locals>" in where:
        raise HpoError(f"its strategy {where.partition(':')[2]} was defined in the script that started the "
                       "search; define it in an importable module to join the search from elsewhere",
                       argument="study_name")
    try:
        cls = pkgutil.resolve_name(where)
    except (ImportError, AttributeError, ValueError) as error:
        raise HpoError(f"its strategy {where} cannot be imported here: {error}", argument="study_name") from None
    return cls(**spec["settings"])


__all__ = [
    "AUTO",
    "NAMES",
    "STRATEGIES",
    "WAIT",
    "BaseStrategy",
    "CoarseToFineStrategy",
    "GpStrategy",
    "GridStrategy",
    "RandomStrategy",
    "SamplerStrategy",
    "Strategy",
    "Suggestion",
    "TpeStrategy",
    "auto_strategy",
    "make_strategy",
    "params_key",
    "strategy_from_spec",
    "strategy_spec",
]
