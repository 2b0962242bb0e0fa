"""hpo: hyperparameter search for PyTorch on Optuna and Ray Tune, every trial in MLflow.

Names are imported on first use: ``import hpo`` loads neither torch, Optuna, MLflow nor Ray.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError

SPIN_COUNT = "10000"
"""How long torch's OpenMP threads (libgomp) spin before they sleep, for this process and the
worker processes it starts, unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` says otherwise.
libgomp spins 300,000 times by default: two searches sharing two cores (a search and an ``hpo
worker`` beside it) each trained a population 3.9-5.9x slower than alone; at 10,000, 2.3-2.5x, for
7-9% more time alone (bench/shared_cores.py, docs/benchmarks.md). It takes effect where torch is imported
later: in the CLI, in the processes a search starts, and after ``import hpo``."""
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)

_WHERE = {
    "PreparedSearch": "hpo._search",
    "join": "hpo._search",
    "prepare": "hpo._search",
    "report": "hpo._search",
    "search": "hpo._search",
    "studies": "hpo._search",
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
