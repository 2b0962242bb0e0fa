"""Drivers run a search on an engine: Optuna, or Ray Tune (imported only when used)."""

from hpo.drivers._base import PRUNERS, BaseDriver, SearchListener, execute_trial
from hpo.drivers._optuna import OptunaDriver

__all__ = ["PRUNERS", "BaseDriver", "OptunaDriver", "SearchListener", "execute_trial"]
