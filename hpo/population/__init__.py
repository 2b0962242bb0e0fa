"""Population training: many trials of a small model trained as one stacked model, each member
still its own trial. An objective opts in with ``population(params, trial) -> Recipe``.

Imports torch: ``hpo`` loads it only when a search trains populations.
"""

from hpo.population._optim import OPTIMIZERS, SCHEDULES, MemberSchedule, StackedOptimizer, make_schedule
from hpo.population._train import (
    PER_MEMBER,
    TRAINING_DEFAULTS,
    Recipe,
    auto_size,
    fit,
    group_key,
    train_population,
    unstackable,
)

__all__ = [
    "OPTIMIZERS",
    "PER_MEMBER",
    "SCHEDULES",
    "TRAINING_DEFAULTS",
    "MemberSchedule",
    "Recipe",
    "StackedOptimizer",
    "auto_size",
    "fit",
    "group_key",
    "make_schedule",
    "train_population",
    "unstackable",
]
