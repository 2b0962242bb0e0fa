"""The budget rule both engines share: which trials take a place in it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from hpo._trial import TrialRecord
from hpo.strategies import params_key

MAX_RETRIES = 2
"""A configuration lost with its process (or to Ctrl-C) runs at most 1 + MAX_RETRIES times."""


def in_budget(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The trials that take a place in the budget, oldest first: all of them, except those
    lost with their process or to Ctrl-C, whose configuration runs again — up to
    ``MAX_RETRIES`` times; the last loss then stands as that configuration's failure."""
    losses: Counter[str] = Counter()
    kept = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.lost:
            key = params_key(trial.params)
            losses[key] += 1
            if losses[key] <= MAX_RETRIES:
                continue
        kept.append(trial)
    return kept
