"""The budget rule both engines share: which trials take a place in it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from hpo.strategies import params_key
from hpo.trial import TrialRecord, TrialState

MAX_RETRIES = 2
"""A configuration lost with its process (or to Ctrl-C) runs at most 1 + MAX_RETRIES times."""


def in_budget(trials: Iterable[TrialRecord], session: int | None = None) -> list[TrialRecord]:
    """The trials that take a place in the budget, oldest first: all of them, except those
    lost with their process or to Ctrl-C, and those that failed in an earlier run than
    ``session`` (the objective may have been fixed since), whose configuration runs again — up
    to ``MAX_RETRIES`` times; the last try then stands as that configuration's failure."""
    losses: Counter[str] = Counter()
    kept = []
    for trial in sorted(trials, key=lambda t: t.number):
        earlier_failure = session is not None and trial.state is TrialState.FAILED and trial.session < session
        if trial.lost or earlier_failure:
            key = params_key(trial.params)
            losses[key] += 1
            if losses[key] <= MAX_RETRIES:
                continue
        kept.append(trial)
    return kept


def owed_again(trials: Iterable[TrialRecord], session: int) -> Counter[str]:
    """The configurations of earlier runs than ``session`` that run again in it, by why: ``failed``
    (the objective may have been fixed since) and ``lost`` (with their process or to Ctrl-C);
    each once, as its latest trial ended. They take no place in the budget yet."""
    return Counter("lost" if t.lost else "failed" for t in retried(trials, session))


def retried(trials: Iterable[TrialRecord], session: int) -> list[TrialRecord]:
    """The latest try of each configuration that runs again (see ``in_budget``) and has not yet,
    oldest first: a claim runs them before anything new, each in its own place."""
    trials = sorted(trials, key=lambda t: t.number)
    latest = {params_key(t.params): t for t in trials
              if t.state is TrialState.FAILED and (t.lost or t.session < session)}
    if not latest:  # as most claims find: the budget's own configurations are not keyed
        return []
    kept = {params_key(t.params) for t in in_budget(trials, session)}
    return sorted((t for key, t in latest.items() if key not in kept), key=lambda t: t.number)
