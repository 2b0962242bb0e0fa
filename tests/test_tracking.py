"""Trials' child runs as MLflow holds them, however they are written: joined into one
transaction on a database store, or call by call through the client (as to a tracking server)."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from conftest import WriteTransactions
from hpo.tracking import MlflowTracker, _writer
from hpo.tracking._runs import RunRef, RunWrite, _in_one_transaction, write_one_by_one
from hpo.tracking._writer import Writer
from hpo.trial import TrialRecord, TrialState

WAYS = {"one transaction": _in_one_transaction, "client calls": write_one_by_one}


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_uri(request, tmp_path, unique) -> str:
    """An MLflow store on SQLite, or in a database of its own on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    import sqlalchemy

    server = request.getfixturevalue("postgres_url")
    with sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE mlflow_{unique}"))
    return server.rsplit("/", 1)[0] + f"/mlflow_{unique}"


def writer(client: MlflowClient, way: str) -> Writer:
    writer = Writer(client)
    writer.run_writer = WAYS[way]
    return writer


def populate(writer: Writer, experiment_id: str) -> list[RunRef]:
    """Three runs created together, their curves and parameters in two batches (the second
    reaching runs that already have values), then ended together: the writes a population's
    trials queue, with what the store must get right (NaN and infinite values, a curve logged
    out of order, an end overwriting a tag and the run's name)."""
    runs = [RunRef() for _ in range(3)]
    hold = threading.Event()
    writer.submit(lambda client: hold.wait())  # all that follows is queued before the writer takes it
    for n, run in enumerate(runs):
        writer.submit(RunWrite(run, experiment_id, name=f"trial-{n:04d}", start_time=1000 + n,
                               tags=[RunTag("hpo.trial_number", str(n)), RunTag("hpo.state", "running")]))
    for n, run in enumerate(runs):
        writer.submit(RunWrite(run, params=[Param("lr", str(0.1 * (n + 1))), Param("seed", str(n))],
                               metrics=[Metric("loss", 1.0 / (n + 1), 2000, 1), Metric("loss", [0.5, math.nan, math.inf][n], 2001, 2),
                                        Metric("acc", 0.3, 2000, 1)]))
    for n, run in enumerate(runs):
        writer.submit(RunWrite(run, metrics=[Metric("loss", 9.0, 1999, 0), Metric("loss", 0.25, 3000, 3)],
                               params=[Param("seed", str(n))]))
        writer.submit(RunWrite(run, metrics=[Metric("final_loss", 0.25, 4000, 0)], status="FINISHED" if n else "KILLED",
                               end_time=5000 + n, tags=[RunTag("hpo.state", "complete"), RunTag("hpo.reason", "done"),
                                                       RunTag("mlflow.runName", f"trial-{n:04d} loss=0.25")]))
    hold.set()
    assert writer.flush() and not writer.failures
    return runs


def read(client: MlflowClient, runs: list[RunRef]) -> list[dict]:
    """What MLflow's client reads of the runs, NaN spelled so that it compares equal."""
    def value(v: float) -> float | str:
        return "nan" if math.isnan(v) else v

    out = []
    for ref in runs:
        run = client.get_run(ref.run_id)
        out.append({
            "name": run.info.run_name, "status": run.info.status, "start": run.info.start_time,
            "end": run.info.end_time, "stage": run.info.lifecycle_stage,
            "artifacts": run.info.artifact_uri.endswith(f"/{ref.run_id}/artifacts"),
            "tags": run.data.tags, "params": run.data.params,
            "latest": {k: value(v) for k, v in run.data.metrics.items()},
            "curves": {key: sorted((m.step, m.timestamp, value(m.value)) for m in client.get_metric_history(ref.run_id, key))
                       for key in run.data.metrics},
        })
    return out


def test_trial_runs_read_the_same_however_they_are_written(tracking_uri, unique):
    client = MlflowClient(tracking_uri)
    written = {}
    for way in WAYS:
        experiment_id = client.create_experiment(f"{unique} {way}")
        written[way] = read(client, populate(writer(client, way), experiment_id))
    assert written["one transaction"] == written["client calls"]
    first, second, third = written["one transaction"]
    assert (first["name"], first["status"], first["end"]) == ("trial-0000 loss=0.25", "KILLED", 5000)
    assert first["tags"]["hpo.state"] == "complete" and first["params"] == {"lr": "0.1", "seed": "0"}
    assert first["latest"]["loss"] == 0.25  # the highest step, though not logged last
    assert first["curves"]["loss"] == [(0, 1999, 9.0), (1, 2000, 1.0), (2, 2001, 0.5), (3, 3000, 0.25)]
    assert second["curves"]["loss"][2] == (2, 2001, "nan") and third["curves"]["loss"][2][2] > 1e300


@pytest.mark.usefixtures("fast_paths")
def test_runs_queued_together_are_written_in_one_transaction(tracking_uri, unique):
    """A population's creations, then its ends: one write transaction each (the client's
    calls take seven a run)."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(unique)
    transactions = WriteTransactions(client._tracking_client.store.engine)
    writer, runs, hold = Writer(client), [RunRef() for _ in range(8)], threading.Event()
    writer.submit(lambda client: hold.wait())
    for n, run in enumerate(runs):
        writer.submit(RunWrite(run, experiment_id, name=f"trial-{n}", tags=[RunTag("hpo.trial_number", str(n))],
                               params=[Param("lr", str(n))], metrics=[Metric("loss", 1.0, 0, 0)]))
    hold.set()
    assert writer.flush() and transactions.count == 1
    hold.clear()
    writer.submit(lambda client: hold.wait())
    for run in runs:
        writer.submit(RunWrite(run, metrics=[Metric("loss", 0.5, 1, 1)], status="FINISHED", end_time=2,
                               tags=[RunTag("hpo.state", "complete")]))
    hold.set()
    assert writer.flush() and transactions.count == 2
    assert {client.get_run(run.run_id).info.status for run in runs} == {"FINISHED"}


@pytest.mark.usefixtures("fast_paths")
def test_a_trials_writes_moments_apart_are_gathered_into_one_transaction(tracking_uri, unique):
    """A quick trial's run created, logged to and ended a few milliseconds apart: the writer,
    finding each alone in its queue, waits up to ``GATHER_S`` for more before it writes, so two
    such trials take one or two write transactions, not six."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(unique)
    transactions = WriteTransactions(client._tracking_client.store.engine)
    writer = Writer(client)
    runs = [RunRef() for _ in range(2)]
    for n, run in enumerate(runs):
        for write in (RunWrite(run, experiment_id, name=f"trial-{n}", tags=[RunTag("hpo.trial_number", str(n))]),
                      RunWrite(run, metrics=[Metric("loss", 1.0, 0, 1)]), RunWrite(run, status="FINISHED", end_time=2)):
            writer.submit(write)
            time.sleep(0.01)
    assert writer.flush() and transactions.count <= 2
    assert [client.get_run(run.run_id).info.status for run in runs] == ["FINISHED"] * 2


def test_flush_does_not_wait_for_a_batch_to_gather(tracking_uri, unique, monkeypatch):
    monkeypatch.setattr(_writer, "GATHER_S", 30.0)
    client = MlflowClient(tracking_uri)
    writer, run = Writer(client), RunRef()
    writer.submit(RunWrite(run, client.create_experiment(unique), name="trial-0"))
    started = time.monotonic()
    assert writer.flush() and run.run_id is not None
    assert time.monotonic() - started < 15


def schema(path: Path) -> tuple:
    """What a store is, apart from its rows of runs: tables and indexes (the lines of their SQL,
    whose order two migrations by MLflow need not agree on), schema version, experiments."""
    with sqlite3.connect(path) as db:
        return (sorted((kind, name, sorted((sql or "").splitlines()))
                       for kind, name, sql in db.execute("select type, name, sql from sqlite_master")),
                db.execute("select version_num from alembic_version").fetchall(),
                db.execute("select experiment_id, name, artifact_location from experiments").fetchall())


@pytest.mark.usefixtures("fast_paths")
def test_a_new_mlflow_store_is_a_copy_of_the_one_mlflow_made_once(tmp_path, monkeypatch):
    """MLflow migrates a new SQLite store for seconds; hpo does that once per MLflow version and
    machine, and copies. A copy is what MLflow makes, its Default experiment's artifacts where
    MLflow puts them from here; with no cache to write, the store is made in place."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HPO_CACHE_DIR", str(cache))
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    MlflowClient(f"sqlite:///{tmp_path / 'by_mlflow.db'}").search_experiments()
    MlflowTracker(f"sqlite:///{tmp_path / 'first.db'}", "x")._connect()
    assert (cache / f"mlflow-{mlflow.__version__}.db").exists()
    (cache / f"mlflow-{mlflow.__version__}.db").chmod(0o444)  # a copy reads it, never writes it
    MlflowTracker(f"sqlite:///{tmp_path / 'second.db'}", "x")._connect()
    assert schema(tmp_path / "second.db") == schema(tmp_path / "first.db") == schema(tmp_path / "by_mlflow.db")
    assert schema(tmp_path / "second.db")[2] == [(0, "Default", str(tmp_path / "project" / "mlruns" / "0"))]

    monkeypatch.setenv("HPO_CACHE_DIR", "/proc/no-cache-here")
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'third.db'}", "x")
    tracker._connect()
    assert schema(tmp_path / "third.db") == schema(tmp_path / "by_mlflow.db")


@pytest.mark.parametrize("way", WAYS)
def test_a_write_mlflow_refuses_loses_no_other_runs(tracking_uri, unique, way, monkeypatch):
    """One run of a population's batch cannot be written (its experiment does not exist): the
    others are, and the one failure is counted."""
    monkeypatch.setattr("hpo.tracking._writer.RETRIES_S", (0.0,))
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(unique)
    written, runs, hold = writer(client, way), [RunRef() for _ in range(3)], threading.Event()
    written.submit(lambda client: hold.wait())
    for n, run in enumerate(runs):
        written.submit(RunWrite(run, "987654" if n == 1 else experiment_id, name=f"trial-{n}",
                                metrics=[Metric("loss", 1.0, 0, 0)], status="FINISHED", end_time=1))
    hold.set()
    assert written.flush()
    assert runs[1].run_id is None and len(written.failures) == 1
    assert [client.get_run(runs[n].run_id).info.status for n in (0, 2)] == ["FINISHED", "FINISHED"]


def test_two_processes_writing_one_trial_make_one_run(tracking_uri, unique):
    """Two runs of one search at once: one repairs MLflow from the study (a trial the other has
    finished, whose run that one's writer has not made yet), then the other makes the trial's
    run. The trial keeps one run, ended as its own process ended it."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(unique)
    parent = client.create_run(experiment_id, run_name="search").info.run_id
    identity = {"uri": tracking_uri, "experiment": unique, "metric": "loss", "experiment_id": experiment_id,
                "parent_run_id": parent, "study": unique}
    repairing, training = MlflowTracker.attach(identity), MlflowTracker.attach(identity)
    record = TrialRecord(0, {"lr": 0.1}, TrialState.COMPLETE, value=0.25, metrics={"loss": 0.25}, seed=7)
    assert repairing.repair([record]) == 1
    run = training.start_trial(0, {"lr": 0.1}, stage=0, seed=7, device="cpu")
    run.log(1, {"loss": 0.25})
    run.finish(record)
    assert training.flush()
    runs = client.search_runs([experiment_id], f"tags.`hpo.study_run` = '{parent}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [1]


@pytest.mark.parametrize("way", WAYS)
def test_writers_making_one_trials_run_at_the_same_moment_make_one_run(tracking_uri, unique, way):
    """Four writers, each with its own client and connections, make the runs of the same ten
    trials at the same moments (runs of one search at once, each repairing MLflow from the study,
    or one repairing while another's writer makes the trial's run). Looking for a run and making
    it are one step: each trial gets one run. Threads, not processes, so that the moments meet:
    the race is between the store's connections, which threads hold as processes do."""
    writers = [(MlflowClient(tracking_uri), WAYS[way]) for _ in range(4)]
    made, refused = runs_made_at_once(MlflowClient(tracking_uri), unique, writers)
    assert made == list(range(10)) and not refused, (made, refused[:1])


def test_writers_on_a_tracking_server_make_one_run_a_trial_under_the_studys_lock(mlflow_server, tmp_path, unique):
    """A tracking server has no lock: each search's tracker makes its trials' runs under the
    search's lock on the study's storage, which every process of the search shares."""
    trackers = [MlflowTracker(mlflow_server, unique, study_storage=f"sqlite:///{tmp_path / 'optuna.db'}")
                for _ in range(4)]
    for tracker in trackers:
        tracker._connect()
    made, refused = runs_made_at_once(MlflowClient(mlflow_server), unique,
                                      [(tracker.client, tracker.writer.write_runs) for tracker in trackers])
    assert made == list(range(10)) and not refused, (made, refused[:1])


def runs_made_at_once(client: MlflowClient, experiment: str, writers: list) -> tuple[list[int], list[BaseException]]:
    """Each writer (a client and a function writing runs) makes the runs of trials 0-9 of one
    search, all at the same moment for each trial; the trial numbers of the runs made (one each
    if no run was made twice), and what the store refused."""
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name="search").info.run_id
    at_once = threading.Barrier(len(writers))
    refused: list[BaseException] = []

    def make_runs(own: MlflowClient, write_runs) -> None:
        for number in range(10):
            write = RunWrite(RunRef(), experiment_id, name=f"trial-{number:04d}", start_time=number, tags=[
                RunTag("hpo.study_run", parent), RunTag("hpo.trial_number", str(number))])
            at_once.wait()
            try:
                write_runs(own, [write])
            except Exception as error:  # the store refused: counted, not a second run
                refused.append(error)

    threads = [threading.Thread(target=make_runs, args=writer) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = client.search_runs([experiment_id], f"tags.`hpo.study_run` = '{parent}'", max_results=1000)
    return sorted(int(run.data.tags["hpo.trial_number"]) for run in runs), refused
