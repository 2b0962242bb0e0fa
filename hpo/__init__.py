"""hpo: hyperparameter search for PyTorch on Optuna and Ray Tune, every trial in MLflow."""

from hpo._errors import HpoError
from hpo._search import PreparedSearch, SearchPlan, SearchResult, join, prepare, search
from hpo._trial import Trial, TrialPruned, TrialRecord, TrialState
from hpo.spaces import SearchSpace, load_space

__all__ = [
    "HpoError",
    "PreparedSearch",
    "SearchPlan",
    "SearchResult",
    "SearchSpace",
    "Trial",
    "TrialPruned",
    "TrialRecord",
    "TrialState",
    "join",
    "load_space",
    "prepare",
    "search",
]
