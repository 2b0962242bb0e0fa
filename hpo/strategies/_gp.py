from __future__ import annotations

from hpo.strategies._base import SamplerStrategy


class GpStrategy(SamplerStrategy):
    """Gaussian-process Bayesian optimisation: Optuna's ``GPSampler`` (log expected
    improvement; its batch form over the trials still running, so that a population's members
    and parallel workers spread out), seeded per trial as ``tpe`` is. Its first 10 trials are
    random. Each proposal fits the process to every trial so far: about a second on two CPU cores
    at 50 trials, more as the study grows, so it suits budgets of tens to a few hundred trials
    that each train for far longer than that."""

    name = "gp"
