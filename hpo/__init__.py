"""hpo: hyperparameter search for PyTorch on Optuna and Ray Tune, every trial in MLflow.

Names are imported on first use: ``import hpo`` loads neither torch, Optuna, MLflow nor Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError

_WHERE = {
    "PreparedSearch": "hpo._search",
    "join": "hpo._search",
    "prepare": "hpo._search",
    "report": "hpo._search",
    "search": "hpo._search",
    "SearchListener": "hpo.loop",
    "SearchPlan": "hpo.plan",
    "SearchSettings": "hpo._settings",
    "SearchResult": "hpo.plan",
    "Trial": "hpo.trial",
    "TrialPruned": "hpo.trial",
    "TrialRecord": "hpo.trial",
    "TrialState": "hpo.trial",
    "SearchSpace": "hpo.spaces",
    "Pruning": "hpo.spaces",
    "load_space": "hpo.spaces",
    "OptunaOptions": "hpo.drivers.optuna",
    "RayOptions": "hpo.drivers.ray",
}

__all__ = [
    "HpoError",
    "OptunaOptions",
    "PreparedSearch",
    "Pruning",
    "RayOptions",
    "SearchListener",
    "SearchPlan",
    "SearchResult",
    "SearchSettings",
    "SearchSpace",
    "Trial",
    "TrialPruned",
    "TrialRecord",
    "TrialState",
    "join",
    "load_space",
    "prepare",
    "report",
    "search",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'hpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from hpo._search import PreparedSearch, join, prepare, report, search
    from hpo._settings import SearchSettings
    from hpo.drivers.optuna import OptunaOptions
    from hpo.drivers.ray import RayOptions
    from hpo.loop import SearchListener
    from hpo.plan import SearchPlan, SearchResult
    from hpo.spaces import Pruning, SearchSpace, load_space
    from hpo.trial import Trial, TrialPruned, TrialRecord, TrialState
