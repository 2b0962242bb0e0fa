"""Many writes to an Optuna SQL storage in one transaction.

Optuna's ``RDBStorage`` commits once per call: a trial created, a value reported, an attribute
set, a state set, a heartbeat. On SQLite each commit is a write to disk (1-2 ms here), which
made a population of 32 trials cost 32 commits per epoch and ~100 ms of bookkeeping a trial.
These functions do the same writes, with Optuna's own models and helpers, inside one session:
one commit for a whole population's claims, reports, results or heartbeats.

They lean on Optuna's private storage modules (``_rdb.models``, ``_create_scoped_session``);
``pyproject.toml`` pins Optuna to 5.x and the store's tests
run them on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Sequence
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
from sqlalchemy import bindparam, insert, select, update


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
    """Create running trials with the templates' parameters and user attributes, and their
    first heartbeat, numbered in order after the study's last; their ids and numbers. The
    study's row is locked first, as Optuna does, so that numbers stay unique between processes."""
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
        session.execute(insert(models.TrialParamModel), params)
    if attrs:
        session.execute(insert(models.TrialUserAttributeModel), attrs)
    now = session.execute(sqlalchemy.func.now()).scalar()  # the database's clock, as heartbeats use
    session.execute(insert(models.TrialHeartbeatModel), [{"trial_id": t.trial_id, "heartbeat": now} for t in trials])
    return [(trial.trial_id, trial.number) for trial in trials]


def trial_states(session: Any, study_id: int, after: int, among: Collection[int]) -> dict[int, OptunaState]:
    """The state of each of the study's trials created after trial id ``after`` or among
    ``among``, by trial id, in order."""
    trial = models.TrialModel
    which = trial.trial_id > after
    if among:
        which = sqlalchemy.or_(which, trial.trial_id.in_(among))
    return dict(session.execute(select(trial.trial_id, trial.state).where(trial.study_id == study_id, which)
                                .order_by(trial.trial_id)).all())


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
        session.execute(insert(models.TrialIntermediateValueModel), rows)


def end_trials(session: Any, ends: Sequence[End]) -> set[int]:
    """Set each trial's attributes, value and final state, a statement for each kind of row
    for all trials; returns the ids of those that had already ended (left as they are). The
    trials' rows are locked first, as Optuna does."""
    trial = models.TrialModel
    ids = [end.trial_id for end in ends]
    states = dict(session.execute(select(trial.trial_id, trial.state).where(trial.trial_id.in_(ids))
                                  .with_for_update()).all())
    ended_before = {trial_id for trial_id in ids if states[trial_id].is_finished()}
    ends = [end for end in ends if end.trial_id not in ended_before]
    attrs = [{"trial_id": end.trial_id, "key": key, "value_json": json.dumps(value)}
             for end in ends for key, value in end.user_attrs.items()]
    _upsert(session, models.TrialUserAttributeModel, attrs, ("trial_id", "key"))
    values = []
    for end in ends:
        if end.value is not None:
            stored, kind = models.TrialValueModel.value_to_stored_repr(end.value)
            values.append({"trial_id": end.trial_id, "objective": 0, "value": stored, "value_type": kind})
    _upsert(session, models.TrialValueModel, values, ("trial_id", "objective"))
    if ends:
        now = datetime.now()
        session.execute(update(trial.__table__).where(trial.trial_id == bindparam("id"))
                        .values(state=bindparam("state"), datetime_complete=bindparam("done")),
                        [{"id": end.trial_id, "state": end.state, "done": now} for end in ends])
    return ended_before


def set_user_attrs(session: Any, attrs: Sequence[tuple[int, str, Any]]) -> None:
    """User attributes (trial id, key, value) set on trials, one statement for each kind of row."""
    _upsert(session, models.TrialUserAttributeModel,
            [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for trial_id, key, value in attrs],
            ("trial_id", "key"))


def _upsert(session: Any, model: Any, rows: list[dict[str, Any]], key: tuple[str, str]) -> None:
    """Rows unique by the two columns of ``key``: inserted where new, the rest of them
    updated where present; one statement each for all rows."""
    if not rows:
        return
    first, second = (getattr(model, name) for name in key)
    present = set(session.execute(select(first, second).where(first.in_({row[key[0]] for row in rows}),
                                                              second.in_({row[key[1]] for row in rows}))).all())
    new = [row for row in rows if (row[key[0]], row[key[1]]) not in present]
    old = [{f"b_{name}": value for name, value in row.items()} for row in rows if (row[key[0]], row[key[1]]) in present]
    if new:
        session.execute(insert(model), new)
    if old:
        table = model.__table__
        changed = [name for name in rows[0] if name not in key]
        session.execute(update(table).where(table.c[key[0]] == bindparam(f"b_{key[0]}"),
                                            table.c[key[1]] == bindparam(f"b_{key[1]}"))
                        .values({name: bindparam(f"b_{name}") for name in changed}), old)


def beat(storage: RDBStorage, trial_ids: Sequence[int]) -> None:
    """Record a heartbeat for each trial, in one transaction (none for no trials)."""
    if not trial_ids:
        return
    heartbeat = models.TrialHeartbeatModel
    with _create_scoped_session(storage.scoped_session, True) as session:
        now = session.execute(sqlalchemy.func.now()).scalar()
        have = set(session.scalars(select(heartbeat.trial_id).where(heartbeat.trial_id.in_(trial_ids))))
        if have:
            session.execute(update(heartbeat).where(heartbeat.trial_id.in_(have)).values(heartbeat=now))
        if new := [{"trial_id": trial_id, "heartbeat": now} for trial_id in trial_ids if trial_id not in have]:
            session.execute(insert(heartbeat), new)
