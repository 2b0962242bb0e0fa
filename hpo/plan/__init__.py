"""What a search is, validated once and saved with its study (``SearchPlan``), and what it
found (``SearchResult``)."""

from hpo.plan._plan import PER_MEMBER, TRAINING_DEFAULTS, SearchPlan, SearchResult, differences, pruning_for

__all__ = ["PER_MEMBER", "TRAINING_DEFAULTS", "SearchPlan", "SearchResult", "differences", "pruning_for"]
