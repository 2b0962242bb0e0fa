"""The trial store: one study per search in an Optuna storage, for every engine and process."""

from hpo.store._budget import MAX_RETRIES, in_budget, owed_again
from hpo.store._store import (
    DONE,
    Claim,
    Heartbeat,
    StudySummary,
    TrialStore,
    claimed_by,
    default_storage_url,
    retry_of,
    study_names,
    study_summaries,
    to_record,
)

__all__ = ["DONE", "MAX_RETRIES", "Claim", "Heartbeat", "StudySummary", "TrialStore", "claimed_by",
           "default_storage_url", "in_budget", "owed_again", "retry_of", "study_names", "study_summaries",
           "to_record"]
