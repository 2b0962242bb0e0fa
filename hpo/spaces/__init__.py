"""Search spaces: YAML files of typed parameters, validated before any trial runs."""

from hpo.spaces._grid import Grid, Shuffle
from hpo.spaces._params import CategoricalParam, FloatParam, IntParam
from hpo.spaces._pruning import PRUNERS, Pruning
from hpo.spaces._space import (
    SearchSpace,
    Seconds,
    direction_doubt,
    direction_sign,
    load_space,
    resolve_space_path,
    space_of,
)

__all__ = [
    "PRUNERS",
    "CategoricalParam",
    "FloatParam",
    "Grid",
    "IntParam",
    "Pruning",
    "SearchSpace",
    "Seconds",
    "Shuffle",
    "direction_doubt",
    "direction_sign",
    "load_space",
    "resolve_space_path",
    "space_of",
]
