"""Writes to trials' child runs, joined across runs: what the background writer finds queued
together (a population's K runs created, or ended, at once) is written in one go; and the one
place ``hpo`` reaches into MLflow's store.

On a database store (SQLite by default, or PostgreSQL) that is one transaction on MLflow's own
tables, through its own SQLAlchemy models and its store's sessions: the client API takes seven
for a run created, logged to once and ended (``create_run``; ``log_batch`` commits params,
metrics, tags and the run's name separately; ``set_terminated``), and nothing joins runs.
Anywhere else (a tracking server), on a schema this module was not tested against
(``KNOWN_SCHEMAS``: MLflow refuses to open a store that is not at its own), and wherever
``HPO_FAST_PATHS=0``, the same writes go through the client, run by run. The tests compare both
ways on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy
from mlflow.entities import Metric, Param, RunTag
from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlflow.utils.uri import append_to_uri_path
from sqlalchemy import insert, select, update

from hpo.files import fast_paths, store_lock

logger = logging.getLogger("hpo")

KNOWN_SCHEMAS = frozenset({"dc11669786a5"})
"""MLflow store schemas (Alembic revisions) whose tables ``_in_one_transaction`` writes: MLflow
3.17's."""


class HasRunId(Protocol):
    """What a run write is for: anything with a ``run_id``, set once the run is created."""

    run_id: str | None


@dataclass
class RunRef:
    """A run known by its id alone (or to be created: ``None``)."""

    run_id: str | None = None


@dataclass
class RunWrite:
    """One write to a trial's run: created (``name``, ``tags``), logged to, ended (``status``)."""

    run: HasRunId
    experiment_id: str = ""
    name: str = ""  # with it, the run is created (unless it already is), tagged with ``tags``
    start_time: int = 0
    metrics: Sequence[Metric] = ()
    params: Sequence[Param] = ()
    tags: Sequence[RunTag] = ()
    status: str | None = None  # with it, the run is ended
    end_time: int | None = None


ONE_RUN_PER = ("hpo.study_run", "hpo.trial_number")
"""A run created with these tags is the only active one with their values: a second process
creating it takes the first one's, looked up under the search's lock (``_making``): in the
transaction that would create it on a database (``_made_elsewhere``), just before through the
client (``_found``)."""

MAKING_LOCK_S = 30.0
"""The longest a write waits for another process to make its runs (it is then retried)."""

RunWriter = Callable[[Any, Sequence[RunWrite], str | None], None]
"""Writes a batch of run writes in their order, given the MLflow client and the store to lock
runs on where MLflow's has no lock (``_making``)."""


def run_writer(client: Any) -> RunWriter:
    """How ``client``'s store takes a batch: one transaction on a database whose schema is
    known, else call by call (said once, with why, where the schema is the reason)."""
    store = database_store(client)
    if store is None:
        return write_one_by_one
    version = schema_version(store.engine)
    if version in KNOWN_SCHEMAS:
        return _in_one_transaction
    logger.warning("hpo: the MLflow store's schema %s is not one hpo has been tested against; its trial runs are "
                   "written through MLflow's client, one call each (slower)", version)
    return write_one_by_one


def database_store(client: Any) -> SqlAlchemyStore | None:
    """``client``'s database store, where hpo may write into its tables (``HPO_FAST_PATHS``)."""
    store = client._tracking_client.store
    return store if fast_paths() and isinstance(store, SqlAlchemyStore) else None


def schema_version(engine: sqlalchemy.Engine) -> str | None:
    """The migration an MLflow database is at (the revision Alembic records)."""
    with engine.connect() as connection:
        return connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()


def point_default_experiment(path: Path, artifacts: str) -> None:
    """In a copy of an MLflow SQLite store made elsewhere, point the Default experiment's
    artifacts at ``artifacts`` (MLflow's API cannot change an experiment's artifact location)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (artifacts,))


def write_one_by_one(client: Any, writes: Sequence[RunWrite], lock_url: str | None = None) -> None:
    """The client API's calls for each write (safe to repeat after a failure part-way); runs
    are made under the search's lock on MLflow's store, or on ``lock_url`` where that has none."""
    for write in writes:
        metrics, params, tags_after = write.metrics, write.params, write.tags
        if write.name and write.run.run_id is None:
            tags = {tag.key: tag.value for tag in write.tags}
            with _making(client, [write], lock_url):
                write.run.run_id = _found(client, write.experiment_id, tags)
                if write.run.run_id is None:
                    write.run.run_id = client.create_run(write.experiment_id, start_time=write.start_time, tags=tags,
                                                         run_name=write.name).info.run_id
                    tags_after = ()
        run_id = write.run.run_id
        assert run_id is not None, "the run is created by an earlier write"
        while metrics or params or tags_after:  # MLflow's limits: 1000 metrics, 100 params, 100 tags a call
            client.log_batch(run_id, metrics=metrics[:1000], params=params[:100], tags=tags_after[:100])
            metrics, params, tags_after = metrics[1000:], params[100:], tags_after[100:]
        if write.status is not None:
            client.set_terminated(run_id, write.status, end_time=write.end_time)


@contextlib.contextmanager
def _making(client: Any, writes: Sequence[RunWrite], lock_url: str | None = None) -> Iterator[None]:
    """Held while the runs that ``writes`` create are looked for and made: the lock of each of
    their searches on MLflow's store (``store_lock``: a file beside SQLite, an advisory lock on
    PostgreSQL), so that two processes making one trial's run at once make one. A tracking
    server offers no lock: there the lock is taken on ``lock_url`` (the study's storage, which
    every process of the search shares), or, without one, two processes can make one each."""
    searches = sorted({tag.value for write in writes if write.name for tag in write.tags
                       if tag.key == ONE_RUN_PER[0]})
    with contextlib.ExitStack() as held:
        for search in searches:
            lock = store_lock(client.tracking_uri, "mlflow-runs", search, MAKING_LOCK_S)
            if lock is None and lock_url:
                lock = store_lock(lock_url, "mlflow-runs", search, MAKING_LOCK_S)
            if lock is not None:
                held.enter_context(lock)
        yield


def _found(client: Any, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The run another process made with the same ``ONE_RUN_PER`` tags."""
    if not all(key in tags for key in ONE_RUN_PER):
        return None
    query = " and ".join(f"tags.`{key}` = '{tags[key]}'" for key in ONE_RUN_PER)
    return next((run.info.run_id for run in client.search_runs([experiment_id], query, max_results=1)), None)


def _in_one_transaction(client: Any, writes: Sequence[RunWrite], lock_url: str | None = None) -> None:
    """All of ``writes`` as the client calls would leave them, in one transaction. Run ids are
    handed out only once it has committed, so a failed batch can be retried whole. No writes,
    no transaction (a repair that finds nothing to mend, at every search's start and end)."""
    if not writes:
        return
    store: SqlAlchemyStore = client._tracking_client.store
    created: dict[int, str] = {}  # id(write.run) -> the run id this transaction gives it
    for write in writes:
        if write.name and write.run.run_id is None and id(write.run) not in created:
            created[id(write.run)] = uuid.uuid4().hex
    with _making(client, [w for w in writes if id(w.run) in created], lock_url), \
            store.ManagedSessionMaker(read_only=False) as session:
        if created:
            made = _made_elsewhere(session, [w for w in writes if w.name and id(w.run) in created])
            created.update(made)
            if new := [w for w in writes if w.name and id(w.run) in created and id(w.run) not in made]:
                _create_runs(session, new, created)
        run_ids = [write.run.run_id or created[id(write.run)] for write in writes]
        ids = set(run_ids)
        tags = {(run_id, key) for run_id, key in session.execute(
            select(SqlTag.run_uuid, SqlTag.key).where(SqlTag.run_uuid.in_(ids)))}
        params = {(run_id, key) for run_id, key in session.execute(
            select(SqlParam.run_uuid, SqlParam.key).where(SqlParam.run_uuid.in_(ids)))}
        latest = {(row.run_uuid, row.key): (row.step, row.timestamp, row.value) for row in session.execute(
            select(SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.step, SqlLatestMetric.timestamp,
                   SqlLatestMetric.value).where(SqlLatestMetric.run_uuid.in_(ids)))}
        tag_values: dict[tuple[str, str], str] = {}
        new_params: list[dict[str, str]] = []
        metrics: dict[tuple, dict[str, Any]] = {}  # by MLflow's key for a metric row: repeats are dropped
        latest_rows: dict[tuple[str, str], dict[str, Any]] = {}
        runs: dict[str, dict[str, Any]] = {}  # what changes on the run's own row
        for write, run_id in zip(writes, run_ids, strict=True):
            if write.name and id(write.run) in created:  # its row was inserted with the name: the tag alone
                tag_values.setdefault((run_id, MLFLOW_RUN_NAME), write.name)
            for tag in write.tags:
                tag_values[(run_id, tag.key)] = tag.value
                if tag.key == MLFLOW_RUN_NAME:
                    runs.setdefault(run_id, {})["name"] = tag.value
            for param in write.params:
                if (run_id, param.key) not in params:
                    params.add((run_id, param.key))
                    new_params.append({"run_uuid": run_id, "key": param.key, "value": param.value})
            for metric in write.metrics:
                is_nan, value = store.sanitize_metric_value(metric.value)
                row = {"run_uuid": run_id, "key": metric.key, "value": value, "timestamp": metric.timestamp,
                       "step": metric.step, "is_nan": is_nan}
                metrics[(run_id, metric.key, metric.timestamp, metric.step, value, is_nan)] = row
                held = latest_rows.get((run_id, metric.key))
                newest = latest.get((run_id, metric.key)) if held is None else (held["step"], held["timestamp"],
                                                                                  held["value"])
                if newest is None or (metric.step, metric.timestamp, value) > newest:
                    latest_rows[(run_id, metric.key)] = row
            if write.status is not None:
                runs.setdefault(run_id, {}).update(status=write.status, end_time=write.end_time)
        _upsert(session, SqlTag, [{"run_uuid": run_id, "key": key, "value": value}
                                  for (run_id, key), value in tag_values.items()], tags)
        if new_params:
            session.execute(insert(SqlParam), new_params)
        if metrics:
            session.execute(insert(SqlMetric), list(metrics.values()))
        _upsert(session, SqlLatestMetric, list(latest_rows.values()), set(latest))
        if runs:
            session.execute(update(SqlRun), [{"run_uuid": run_id, **values} for run_id, values in runs.items()])
    for write in writes:
        if write.run.run_id is None and id(write.run) in created:
            write.run.run_id = created[id(write.run)]


def _made_elsewhere(session: Any, writes: Sequence[RunWrite]) -> dict[int, str]:
    """The runs of ``writes`` that another process made first (its trial's run, while this one
    repairs the search, or the other way round), by ``id(write.run)``: found by the tags of
    ``ONE_RUN_PER``, in the transaction that would create them, under their search's lock
    (``_making``), so two processes never make two."""
    wanted = {}
    for write in writes:
        tags = {tag.key: tag.value for tag in write.tags}
        if all(key in tags for key in ONE_RUN_PER):
            wanted[tuple(tags[key] for key in ONE_RUN_PER)] = id(write.run)
    if not wanted:
        return {}
    first = ONE_RUN_PER[0]
    keys: dict[str, dict[str, str]] = {}
    for run_id, key, value in session.execute(
            select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).join(SqlRun, SqlRun.run_uuid == SqlTag.run_uuid)
            .where(SqlRun.lifecycle_stage == "active", SqlTag.key.in_(ONE_RUN_PER),
                   SqlTag.run_uuid.in_(select(SqlTag.run_uuid).where(
                       SqlTag.key == first, SqlTag.value.in_({key[0] for key in wanted}))))):
        keys.setdefault(run_id, {})[key] = value
    found = {tuple(tags.get(key) for key in ONE_RUN_PER): run_id for run_id, tags in keys.items()}
    return {ref: found[key] for key, ref in wanted.items() if key in found}


def _create_runs(session: Any, writes: Sequence[RunWrite], run_ids: dict[int, str]) -> None:
    """The runs' own rows, as ``create_run`` makes them (their tags come with the other tags)."""
    experiments = {int(write.experiment_id) for write in writes}
    locations = dict(session.execute(select(SqlExperiment.experiment_id, SqlExperiment.artifact_location)
                                     .where(SqlExperiment.experiment_id.in_(experiments))).all())
    session.execute(insert(SqlRun), [
        {"run_uuid": run_ids[id(w.run)], "name": w.name, "experiment_id": int(w.experiment_id),
         "artifact_uri": append_to_uri_path(locations[int(w.experiment_id)], run_ids[id(w.run)],
                                            SqlAlchemyStore.ARTIFACTS_FOLDER_NAME),
         "source_type": "UNKNOWN", "source_name": "", "entry_point_name": "", "source_version": "",
         "user_id": "unknown", "status": "RUNNING", "start_time": w.start_time, "end_time": None,
         "deleted_time": None, "lifecycle_stage": "active"}
        for w in writes])


def _upsert(session: Any, model: Any, rows: list[dict[str, Any]], present: set[tuple[str, str]]) -> None:
    """Rows keyed by (run, key), their primary key: inserted where new, updated where ``present``
    (each in one statement for all rows)."""
    new = [row for row in rows if (row["run_uuid"], row["key"]) not in present]
    old = [row for row in rows if (row["run_uuid"], row["key"]) in present]
    if new:
        session.execute(insert(model), new)
    if old:
        session.execute(update(model), old)  # SQLAlchemy's bulk update by primary key
