"""A trial: what the objective sees of it (``Trial``), the claim that starts it, how it ends
(``Outcome``, ``TrialRecord``), how trials rank, and the time limits and signals that stop it."""

from hpo.trial._signals import STOP, Terminated, TrialTimeout, stop_on_signals, stop_requested, time_limit
from hpo.trial._trial import (
    DONE,
    INTERRUPTED,
    TIMEOUT,
    WORKER_LOST,
    Claim,
    DivergenceGuard,
    Outcome,
    Pruning,
    ReadParams,
    Trial,
    TrialPruned,
    TrialRecord,
    TrialState,
    ended_by,
    how_it_ended,
    outcome_of,
    raised_at,
    ranking,
    run_objective,
    shown,
    trial_seed,
)

__all__ = [
    "DONE", "INTERRUPTED", "STOP", "TIMEOUT", "WORKER_LOST", "Claim", "DivergenceGuard", "Outcome", "Pruning",
    "ReadParams", "Terminated", "Trial", "TrialPruned", "TrialRecord", "TrialState", "TrialTimeout", "ended_by",
    "how_it_ended", "outcome_of", "raised_at", "ranking", "run_objective", "shown", "stop_on_signals",
    "stop_requested", "time_limit", "trial_seed",
]
