"""Pruning: median, successive halving and Hyperband as rules over per-step tables of the values
trials reported, engine-free, decided alike for a trial alone, a population's member or a trial
on Ray."""

from hpo.pruning._pruner import Pruner, TrialPruning, make_pruner
from hpo.pruning._rules import Hyperband, Median, Rule, StepValues, SuccessiveHalving

__all__ = ["Hyperband", "Median", "Pruner", "Rule", "StepValues", "SuccessiveHalving", "TrialPruning", "make_pruner"]
