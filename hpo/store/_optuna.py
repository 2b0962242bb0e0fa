"""The trial store's reads and writes beyond a study's own API, and the one place ``hpo`` reaches
into Optuna's storage internals.

Optuna's ``RDBStorage`` commits once per call: a trial created, a value reported, an attribute
set, a state set, a heartbeat. On SQLite each commit is a write to disk (1-2 ms here), which
made a population of 32 trials cost 32 commits per epoch and ~100 ms of bookkeeping a trial.
``OneTransaction`` does the same writes with Optuna's own models inside one session: one commit
for a whole population's claims, reports, results or heartbeats. It leans on Optuna's private
storage modules (``_rdb.models``, ``_create_scoped_session``), so it is used only on a storage
whose schema is one it was tested against (``KNOWN_SCHEMAS``); ``PublicCalls`` does the same
through Optuna's public storage API, call by call, everywhere else, and wherever
``HPO_FAST_PATHS=0``. The contract tests run both against the installed Optuna.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy
from optuna.distributions import distribution_to_json
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy import bindparam, insert, select, update

from hpo.files import fast_paths

logger = logging.getLogger("hpo")

KNOWN_SCHEMAS = frozenset({"v3.2.0.a"})
"""Optuna storage schemas (``RDBStorage.get_current_version()``) whose tables ``OneTransaction``
writes: Optuna 5.0 and 5.1 create ``v3.2.0.a``. Another one (a newer Optuna migrated the
storage) is written through ``PublicCalls``, with a notice."""
BEAT = "hpo.beat"
"""``PublicCalls``'s heartbeat: a running trial's user attribute, the time of its last beat
(Optuna's public API writes heartbeats but reads them back only in ``fail_stale_trials``, which
fails a trial at the first stale look)."""


def study_writes(storage: RDBStorage) -> StudyWrites:
    """How the store writes to ``storage``: in one transaction where its schema is known, else
    call by call (said once, with why)."""
    if not fast_paths():
        return PublicCalls(storage)
    version = storage.get_current_version()
    if version in KNOWN_SCHEMAS:
        return OneTransaction(storage)
    logger.warning("hpo: the Optuna storage's schema %s is not one hpo has been tested against; its writes go "
                   "through Optuna's public API, one call each (slower)", version)
    return PublicCalls(storage)


@dataclass(frozen=True)
class End:
    """How a trial ends: its state, its value (if any) and user attributes written with it."""

    trial_id: int
    state: OptunaState
    value: float | None
    user_attrs: dict[str, Any]


def _add_trials(session: Any, study_id: int, templates: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
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


def _trial_states(session: Any, study_id: int, after: int, among: Collection[int]) -> dict[int, OptunaState]:
    """The state of each of the study's trials created after trial id ``after`` or among
    ``among``, by trial id, in order."""
    trial = models.TrialModel
    which = trial.trial_id > after
    if among:
        which = sqlalchemy.or_(which, trial.trial_id.in_(among))
    return dict(session.execute(select(trial.trial_id, trial.state).where(trial.study_id == study_id, which)
                                .order_by(trial.trial_id)).all())


def _add_reports(session: Any, reports: Sequence[tuple[int, int, float]]) -> None:
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


def _end_trials(session: Any, ends: Sequence[End]) -> set[int]:
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


def _beat(storage: RDBStorage, trial_ids: Sequence[int]) -> None:
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


class StudyWrites:
    """What the trial store reads and writes of a study besides Optuna's ``Study`` API, by trial
    id; ``reports`` are (trial id, step, value)."""

    def __init__(self, storage: RDBStorage) -> None:
        self.storage = storage

    def add_trials(self, study_id: int, templates: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
        """Running trials with the templates' parameters and user attributes, and their first
        heartbeat, numbered in order after the study's last: their ids and numbers."""
        raise NotImplementedError

    def states(self, study_id: int, after: int, among: Collection[int]) -> dict[int, OptunaState]:
        """The state of each of the study's trials created after trial id ``after`` or among
        ``among``, by trial id, in order."""
        raise NotImplementedError

    def read(self, study_id: int, ids: Collection[int], newest: int) -> list[tuple[int, FrozenTrial]]:
        """The trials of ``ids``, and any created after trial id ``newest``, with their ids."""
        raise NotImplementedError

    def add_reports(self, reports: Sequence[tuple[int, int, float]]) -> None:
        """Intermediate values, each step reported once; those of a trial that has ended
        meanwhile (another process failed it as lost) are dropped, as the trial's end will say."""
        raise NotImplementedError

    def end(self, reports: Sequence[tuple[int, int, float]], ends: Sequence[End]) -> set[int]:
        """``reports``, then each trial's attributes, value and final state; returns the ids of
        those that had already ended (left as they are)."""
        raise NotImplementedError

    def set_study_attrs(self, study_id: int, attrs: dict[str, Any]) -> None:
        """User attributes set on the study."""
        raise NotImplementedError

    def beat(self, trial_ids: Sequence[int]) -> None:
        """A heartbeat for each running trial."""
        raise NotImplementedError

    def stale(self, study_id: int) -> list[int]:
        """The running trials whose last heartbeat is older than the storage's grace period."""
        raise NotImplementedError

    def running_attr(self, study_id: int, key: str) -> dict[int, Any]:
        """The user attribute ``key`` of each running trial (None where it has none), by trial id,
        in order."""
        raise NotImplementedError


class OneTransaction(StudyWrites):
    """Each call one transaction on Optuna's own tables (``KNOWN_SCHEMAS`` only)."""

    @contextlib.contextmanager
    def _session(self, ignore_integrity_error: bool = False) -> Iterator[Any]:
        with _create_scoped_session(self.storage.scoped_session, ignore_integrity_error) as session:
            yield session

    def add_trials(self, study_id: int, templates: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
        with self._session() as session:
            return _add_trials(session, study_id, templates)

    def states(self, study_id: int, after: int, among: Collection[int]) -> dict[int, OptunaState]:
        with self._session() as session:
            return _trial_states(session, study_id, after, among)

    def read(self, study_id: int, ids: Collection[int], newest: int) -> list[tuple[int, FrozenTrial]]:
        return [(trial._trial_id, trial) for trial in self.storage._get_trials(study_id, None, set(ids), newest)]

    def add_reports(self, reports: Sequence[tuple[int, int, float]]) -> None:
        if reports:
            with self._session() as session:
                _add_reports(session, reports)

    def end(self, reports: Sequence[tuple[int, int, float]], ends: Sequence[End]) -> set[int]:
        with self._session() as session:
            _add_reports(session, reports)
            return _end_trials(session, ends)

    def set_study_attrs(self, study_id: int, attrs: dict[str, Any]) -> None:
        with self._session() as session:
            _upsert(session, models.StudyUserAttributeModel, [
                {"study_id": study_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()],
                ("study_id", "key"))

    def beat(self, trial_ids: Sequence[int]) -> None:
        _beat(self.storage, trial_ids)

    def stale(self, study_id: int) -> list[int]:
        return self.storage._get_stale_trial_ids(study_id)

    def running_attr(self, study_id: int, key: str) -> dict[int, Any]:
        trial, attr = models.TrialModel, models.TrialUserAttributeModel
        with self._session() as session:
            rows = session.execute(
                select(trial.trial_id, attr.value_json)
                .outerjoin(attr, sqlalchemy.and_(attr.trial_id == trial.trial_id, attr.key == key))
                .where(trial.study_id == study_id, trial.state == OptunaState.RUNNING).order_by(trial.trial_id))
            return {trial_id: None if value is None else json.loads(value) for trial_id, value in rows}


class PublicCalls(StudyWrites):
    """Optuna's public storage API, a call (and a commit) per write. A heartbeat is the
    ``BEAT`` user attribute; a trial's id is asked once per trial number."""

    def __init__(self, storage: RDBStorage) -> None:
        super().__init__(storage)
        self._ids: dict[tuple[int, int], int] = {}  # (study id, trial number) -> trial id

    def _id(self, study_id: int, trial: FrozenTrial) -> int:
        key = (study_id, trial.number)
        if key not in self._ids:
            self._ids[key] = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        return self._ids[key]

    def _trials(self, study_id: int, states: Collection[OptunaState] | None = None) -> list[tuple[int, FrozenTrial]]:
        return [(self._id(study_id, t), t) for t in self.storage.get_all_trials(study_id, deepcopy=False,
                                                                                   states=states)]

    def add_trials(self, study_id: int, templates: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
        made = []
        for template in templates:
            trial_id = self.storage.create_new_trial(study_id, template_trial=template)
            made.append((trial_id, self.storage.get_trial_number_from_id(trial_id)))
        self.beat([trial_id for trial_id, _ in made])
        return made

    def states(self, study_id: int, after: int, among: Collection[int]) -> dict[int, OptunaState]:
        return dict(sorted((trial_id, t.state) for trial_id, t in self._trials(study_id)
                           if trial_id > after or trial_id in among))

    def read(self, study_id: int, ids: Collection[int], newest: int) -> list[tuple[int, FrozenTrial]]:
        return [(trial_id, t) for trial_id, t in self._trials(study_id) if trial_id in ids or trial_id > newest]

    def add_reports(self, reports: Sequence[tuple[int, int, float]]) -> None:
        for trial_id, step, value in reports:
            with contextlib.suppress(UpdateFinishedTrialError):
                self.storage.set_trial_intermediate_value(trial_id, step, value)

    def end(self, reports: Sequence[tuple[int, int, float]], ends: Sequence[End]) -> set[int]:
        self.add_reports(reports)
        ended_before = set()
        for end in ends:
            try:
                for key, value in end.user_attrs.items():
                    self.storage.set_trial_user_attr(end.trial_id, key, value)
                self.storage.set_trial_state_values(end.trial_id, end.state,
                                                    None if end.value is None else [end.value])
            except UpdateFinishedTrialError:
                ended_before.add(end.trial_id)
        return ended_before

    def set_study_attrs(self, study_id: int, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.storage.set_study_user_attr(study_id, key, value)

    def beat(self, trial_ids: Sequence[int]) -> None:
        now = time.time()
        for trial_id in trial_ids:
            with contextlib.suppress(UpdateFinishedTrialError):
                self.storage.set_trial_user_attr(trial_id, BEAT, now)

    def stale(self, study_id: int) -> list[int]:
        now = time.time()
        return [trial_id for trial_id, t in self._trials(study_id, (OptunaState.RUNNING,))
                if now - t.user_attrs.get(BEAT, t.datetime_start.timestamp() if t.datetime_start else now)
                > self.storage.grace_period]

    def running_attr(self, study_id: int, key: str) -> dict[int, Any]:
        return {trial_id: t.user_attrs.get(key) for trial_id, t in self._trials(study_id, (OptunaState.RUNNING,))}
