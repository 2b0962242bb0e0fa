"""Many writes to an Optuna SQL storage in one transaction.

Optuna's ``RDBStorage`` commits once per call: a trial created, a value reported, an attribute
set, a state set, a heartbeat. On SQLite each commit is a write to disk (1-2 ms here), which
made a population of 32 trials cost 32 commits per epoch and ~100 ms of bookkeeping a trial.
These functions do the same writes, with Optuna's own models and helpers, inside one session:
one commit for a whole population's claims, reports, results or heartbeats.

They lean on Optuna's private storage modules (``_rdb.models``, ``_create_scoped_session``,
``_set_trial_*_without_commit``); ``pyproject.toml`` pins Optuna to 5.x and the store's tests
run them on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy
from optuna.distributions import distribution_to_json
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState


@dataclass(frozen=True)
class End:
    """How a trial ends: its state, its value (if any) and user attributes written with it."""

    trial_id: int
    state: OptunaState
    value: float | None
    user_attrs: dict[str, Any]


@contextlib.contextmanager
def transaction(storage: RDBStorage) -> Iterator[Any]:
    """A session whose writes commit together on leaving (or none, on an error)."""
    with _create_scoped_session(storage.scoped_session) as session:
        yield session


def add_trials(session: Any, study_id: int, templates: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
    """Create running trials with the templates' parameters and user attributes, numbered in
    order after the study's last; their ids and numbers. The study's row is locked first, as Optuna does,
    so that numbers stay unique between processes."""
    models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
    first = session.query(sqlalchemy.func.count(models.TrialModel.trial_id)).filter(
        models.TrialModel.study_id == study_id).scalar()
    trials = [models.TrialModel(study_id=study_id, number=first + i, state=OptunaState.RUNNING,
                                datetime_start=template.datetime_start) for i, template in enumerate(templates)]
    session.add_all(trials)
    session.flush()  # the trials' ids
    params = [{"trial_id": trial.trial_id, "param_name": name,
               "param_value": template.distributions[name].to_internal_repr(value),
               "distribution_json": distribution_to_json(template.distributions[name])}
              for trial, template in zip(trials, templates, strict=True) for name, value in template.params.items()]
    attrs = [{"trial_id": trial.trial_id, "key": key, "value_json": json.dumps(value)}
             for trial, template in zip(trials, templates, strict=True) for key, value in template.user_attrs.items()]
    if params:
        session.execute(sqlalchemy.insert(models.TrialParamModel), params)
    if attrs:
        session.execute(sqlalchemy.insert(models.TrialUserAttributeModel), attrs)
    return [(trial.trial_id, trial.number) for trial in trials]


def add_reports(session: Any, reports: Sequence[tuple[int, int, float]]) -> None:
    """Intermediate values (trial id, step, value), each step reported once; those of a trial
    that has ended meanwhile (another process failed it as lost) are dropped, as the trial's
    end will say."""
    if not reports:
        return
    ids = {trial_id for trial_id, _, _ in reports}
    states = session.query(models.TrialModel.trial_id, models.TrialModel.state).filter(
        models.TrialModel.trial_id.in_(ids))
    running = {trial_id for trial_id, state in states if not state.is_finished()}
    rows = []
    for trial_id, step, value in reports:
        if trial_id in running:
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                         "intermediate_value_type": kind})
    if rows:
        session.execute(sqlalchemy.insert(models.TrialIntermediateValueModel), rows)


def end_trials(session: Any, storage: RDBStorage, ends: Sequence[End]) -> set[int]:
    """Set each trial's attributes, value and final state; returns the ids of those that had
    already ended (left as they are)."""
    ended_before = set()
    for end in ends:
        trial = models.TrialModel.find_or_raise_by_id(end.trial_id, session, for_update=True)
        if trial.state.is_finished():
            ended_before.add(end.trial_id)
            continue
        for key, value in end.user_attrs.items():
            storage._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, end.trial_id, key, value)
        if end.value is not None:
            storage._set_trial_value_without_commit(session, trial, 0, end.value)
        trial.state = end.state
        trial.datetime_complete = datetime.now()
    return ended_before


def beat(storage: RDBStorage, trial_ids: Sequence[int]) -> None:
    """Record a heartbeat for each trial, in one transaction (none for no trials)."""
    if not trial_ids:
        return
    with _create_scoped_session(storage.scoped_session, True) as session:
        now = session.execute(sqlalchemy.func.now()).scalar()
        for trial_id in trial_ids:
            heartbeat = models.TrialHeartbeatModel.where_trial_id(trial_id, session, True)
            if heartbeat is None:
                session.add(models.TrialHeartbeatModel(trial_id=trial_id))
            else:
                heartbeat.heartbeat = now
