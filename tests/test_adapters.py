"""The contracts hpo relies on where it reaches into a library: each way of writing a study
(Optuna's tables in one transaction, Optuna's public API call by call) passes the same suite on
SQLite and PostgreSQL against the installed Optuna; each fast path is taken only on a schema it
knows, and never with ``HPO_FAST_PATHS=0`` (MLflow's two ways of writing runs are compared in
``test_tracking.py``)."""

from __future__ import annotations

import logging
import math
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState as OptunaState

from hpo.store import _optuna
from hpo.store._optuna import End, OneTransaction, PublicCalls, study_writes
from hpo.tracking import MlflowTracker, _runs

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
WAYS = {"one transaction": OneTransaction, "public calls": PublicCalls}


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=list(WAYS))
def writes(request, storage_url):
    storage = RDBStorage(storage_url, heartbeat_interval=1, grace_period=2)
    return WAYS[request.param](storage)


def study(writes, unique) -> int:
    return writes.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], unique)


def templates(n: int) -> list[optuna.trial.FrozenTrial]:
    return [optuna.trial.create_trial(state=OptunaState.RUNNING, params={"lr": 0.01 * (i + 1)},
                                      distributions={"lr": FloatDistribution(1e-4, 1.0, log=True)},
                                      user_attrs={"hpo.claim": {"worker": "here:1", "stage": i}})
            for i in range(n)]


def test_trials_are_made_numbered_in_order_with_their_parameters(writes, unique):
    study_id = study(writes, unique)
    writes.storage.create_new_trial(study_id)  # one made by Optuna first: numbering goes on after it
    made = writes.add_trials(study_id, templates(3))
    assert [number for _, number in made] == [1, 2, 3]
    trials = writes.storage.get_all_trials(study_id)
    assert [t.params for t in trials[1:]] == [{"lr": 0.01}, {"lr": 0.02}, {"lr": 0.03}]
    assert trials[2].distributions == {"lr": FloatDistribution(1e-4, 1.0, log=True)}
    assert trials[3].user_attrs["hpo.claim"] == {"worker": "here:1", "stage": 2}
    assert [t.state for t in trials[1:]] == [OptunaState.RUNNING] * 3
    assert [writes.storage.get_trial_id_from_study_id_trial_number(study_id, n) for _, n in made] == \
        [trial_id for trial_id, _ in made]


def test_states_and_reads_name_what_changed(writes, unique):
    study_id = study(writes, unique)
    (first, _), (second, _), (third, _) = writes.add_trials(study_id, templates(3))
    writes.storage.set_trial_state_values(first, OptunaState.COMPLETE, [0.5])
    assert writes.states(study_id, second, [first]) == {first: OptunaState.COMPLETE, third: OptunaState.RUNNING}
    read = writes.read(study_id, [first], third)
    assert [(trial_id, t.number, t.value) for trial_id, t in read] == [(first, 0, 0.5)]


def test_reports_and_ends_are_written_but_never_over_a_trial_another_process_ended(writes, unique):
    study_id = study(writes, unique)
    (done, _), (pruned, _), (lost, _) = writes.add_trials(study_id, templates(3))
    writes.add_reports([(done, 1, 0.5), (pruned, 1, math.nan), (lost, 1, math.inf)])
    writes.storage.set_trial_state_values(lost, OptunaState.FAIL)  # another process found it lost
    ended_before = writes.end([(done, 2, 0.25), (lost, 2, 0.1)], [
        End(done, OptunaState.COMPLETE, 0.25, {"hpo.result": {"state": "complete"}}),
        End(pruned, OptunaState.PRUNED, 0.7, {"hpo.result": {"state": "pruned"}}),
        End(lost, OptunaState.COMPLETE, 0.1, {"hpo.result": {"state": "complete"}})])
    assert ended_before == {lost}
    done_t, pruned_t, lost_t = writes.storage.get_all_trials(study_id)
    assert (done_t.state, done_t.value, done_t.intermediate_values) == (OptunaState.COMPLETE, 0.25, {1: 0.5, 2: 0.25})
    assert done_t.user_attrs["hpo.result"] == {"state": "complete"} and done_t.datetime_complete is not None
    assert pruned_t.state is OptunaState.PRUNED and math.isnan(pruned_t.intermediate_values[1])
    assert (lost_t.state, lost_t.intermediate_values, "hpo.result" in lost_t.user_attrs) == (
        OptunaState.FAIL, {1: math.inf}, False)


def test_a_trial_that_stops_beating_goes_stale_after_the_grace_period(writes, unique):
    study_id = study(writes, unique)
    (silent, _), (beating, _) = writes.add_trials(study_id, templates(2))
    assert writes.stale(study_id) == []  # the claim wrote the first beat
    for _ in range(4):
        time.sleep(1)
        writes.beat([beating])
    assert writes.stale(study_id) == [silent]


def test_a_user_attribute_of_each_running_trial_is_read(writes, unique):
    study_id = study(writes, unique)
    (done, _), (running, _) = writes.add_trials(study_id, templates(2))
    bare = writes.storage.create_new_trial(study_id)  # running, without the attribute
    writes.storage.set_trial_state_values(done, OptunaState.COMPLETE, [0.5])
    assert writes.running_attr(study_id, "hpo.claim") == {running: {"worker": "here:1", "stage": 1}, bare: None}


def test_study_attributes_are_set_and_set_again(writes, unique):
    study_id = study(writes, unique)
    writes.set_study_attrs(study_id, {"hpo.run_id.0": "a", "hpo.run_id.1": "b"})
    writes.set_study_attrs(study_id, {"hpo.run_id.1": "c"})
    assert writes.storage.get_study_user_attrs(study_id) == {"hpo.run_id.0": "a", "hpo.run_id.1": "c"}


@pytest.mark.usefixtures("fast_paths")
def test_the_fast_path_is_taken_only_on_a_schema_it_knows(storage_url, monkeypatch, caplog):
    storage = RDBStorage(storage_url)
    assert storage.get_head_version() in _optuna.KNOWN_SCHEMAS  # a new Optuna schema: review OneTransaction
    assert isinstance(study_writes(storage), OneTransaction)
    monkeypatch.setenv("HPO_FAST_PATHS", "0")
    assert isinstance(study_writes(storage), PublicCalls)
    monkeypatch.delenv("HPO_FAST_PATHS")
    monkeypatch.setattr(_optuna, "KNOWN_SCHEMAS", frozenset({"v9.9.9"}))
    with caplog.at_level(logging.WARNING, logger="hpo"):
        assert isinstance(study_writes(storage), PublicCalls)
    assert [r.getMessage() for r in caplog.records] == [
        f"hpo: the Optuna storage's schema {storage.get_current_version()} is not one hpo has been tested against; "
        "its writes go through Optuna's public API, one call each (slower)"]


@pytest.mark.usefixtures("fast_paths")
def test_mlflow_runs_are_written_into_its_tables_only_on_a_schema_known(tmp_path, monkeypatch, caplog):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = client._tracking_client.store
    assert _runs.schema_version(store.engine) in _runs.KNOWN_SCHEMAS  # a new MLflow schema: review _runs
    assert _runs.run_writer(client) is _runs._in_one_transaction
    monkeypatch.setenv("HPO_FAST_PATHS", "0")
    assert _runs.run_writer(client) is _runs.write_one_by_one
    monkeypatch.delenv("HPO_FAST_PATHS")
    monkeypatch.setattr(_runs, "KNOWN_SCHEMAS", frozenset({"0123456789ab"}))
    with caplog.at_level(logging.WARNING, logger="hpo"):
        assert _runs.run_writer(client) is _runs.write_one_by_one
    assert [r.getMessage() for r in caplog.records] == [
        f"hpo: the MLflow store's schema {_runs.schema_version(store.engine)} is not one hpo has been tested against; "
        "its trial runs are written through MLflow's client, one call each (slower)"]


def test_a_new_mlflow_store_is_made_by_mlflow_itself_without_fast_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_FAST_PATHS", "0")
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x")
    tracker._connect()
    assert not (tmp_path / "cache").exists()  # no copy of a store made once, no write into its tables
    assert tracker.client.get_experiment("0").name == "Default"
