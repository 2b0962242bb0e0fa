"""The one trial loop every driver runs (``TrialLoop``, ``work``), and what it tells the one
watching the search (``SearchListener``)."""

from hpo.loop._listener import POPULATION_NOTICE, Listeners, SearchListener
from hpo.loop._loop import (
    SETUP_SAID_AFTER_S,
    Started,
    TrialLoop,
    group_quota,
    make_trial,
    population_size,
    population_tags,
    record_of,
    run_population,
    run_trial,
    set_up,
    work,
    worker_name,
)

__all__ = [
    "POPULATION_NOTICE", "SETUP_SAID_AFTER_S", "Listeners", "SearchListener", "Started", "TrialLoop", "group_quota",
    "make_trial", "population_size", "population_tags", "record_of", "run_population", "run_trial", "set_up", "work",
    "worker_name",
]
