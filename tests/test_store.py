"""The trial store under races: two processes failing the same lost trial, a trial finishing
while another process fails it. Each process has its own connection to one real SQLite store."""

from __future__ import annotations

import fcntl
import itertools
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb import models

import hpo
from conftest import WriteTransactions, child_runs, digits_space, left_behind, wait_for
from hpo import TrialRecord, TrialState
from hpo.files import holders, process_ended, store_lock, this_process
from hpo.loop import TrialLoop
from hpo.store import TrialStore


def opened(stores: dict, name: str, processes: int = 2) -> list[TrialLoop]:
    """A started search and one trial loop per process, each with its own store connection."""
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=1), strategy="grid", report=False, n_trials=3,
                           study_name=name, experiment=name, evaluate_test=False, **stores)
    prepared.tracker.start_search(prepared.plan, None)
    loops = [TrialLoop(prepared.plan, TrialStore(stores["storage"], name, heartbeat_interval=1, grace_period=2),
                       prepared.tracker) for _ in range(processes)]
    loops[0].store.open(prepared.plan, prepared.tracker.identity())
    return loops


def complete(number: int, params: dict) -> TrialRecord:
    return TrialRecord(number, params, TrialState.COMPLETE, 0.5, metrics={"val_loss": 0.5})


def test_two_processes_failing_the_same_lost_trial_both_survive(stores, unique):
    first, second = opened(stores, unique)
    (claim,) = first.store.claim(first.plan, "gone:1")  # its process dies after one heartbeat
    first.store.writes.beat([claim.trial_id])
    time.sleep(3.5)
    first.store.stale(), second.store.stale()  # the first look of each
    time.sleep(2.1)
    found = [first.store.stale(), second.store.stale()]
    assert found == [[claim.trial_id]] * 2  # both see it dead

    failed: list = [None, None]
    start = threading.Barrier(2)

    def fail(index: int, loop: TrialLoop) -> None:
        start.wait()
        failed[index] = loop.fail(found[index])

    threads = [threading.Thread(target=fail, args=(i, loop)) for i, loop in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(f) for f in failed) == [0, 1]  # one of them failed it; the other was told
    (record,) = [r for f in failed for r in f]
    assert (record.state, record.reason) == (TrialState.FAILED, "worker lost")
    first.tracker.flush()  # MLflow is written in the background
    runs = child_runs(stores["tracking_uri"], first.tracker.parent_run_id)
    assert [(r.info.status, r.data.tags["hpo.reason"]) for r in runs] == [("FAILED", "worker lost")]  # one run


def test_a_trial_that_finished_meanwhile_is_not_failed(stores, unique):
    owner, reaper = opened(stores, unique)
    (claim,) = owner.store.claim(owner.plan, "here:1")
    owner.store.finish(claim, complete(claim.number, claim.params))
    assert reaper.fail([claim.trial_id]) == []
    (trial,) = reaper.store.trials()
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.5)


def test_a_trial_failed_as_lost_meanwhile_keeps_that_verdict(stores, unique):
    """Its owner was alive after all (it had stalled): its result comes too late, and the
    trial stays failed, in the store and in MLflow, so that its configuration runs again."""
    owner, reaper = opened(stores, unique)
    (started,) = owner.claim("stalled:1", "cpu")
    reaper.fail([started.claim.trial_id])
    (record,) = owner.finish([(started, complete(started.claim.number, started.claim.params))])
    assert (record.state, record.reason) == (TrialState.FAILED, "worker lost")
    (trial,) = owner.store.trials()
    assert (trial.state, trial.reason) == (TrialState.FAILED, "worker lost")
    owner.tracker.flush()  # MLflow is written in the background
    runs = child_runs(stores["tracking_uri"], owner.tracker.parent_run_id)
    assert [(r.info.status, r.data.tags["hpo.reason"]) for r in runs] == [("FAILED", "worker lost")]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_stores(request, stores) -> dict[str, str]:
    """The session's stores, with the study storage on SQLite and on PostgreSQL in turn."""
    if request.param == "sqlite":
        return stores
    return {**stores, "storage": request.getfixturevalue("postgres_url")}


def test_a_process_is_called_ended_only_where_this_machine_can_tell():
    """A trial's process is judged ended at once only under the same boot of the same kernel
    and PID namespace; a number reused by a later process does not keep it alive."""
    here = this_process()
    child = subprocess.run([sys.executable, "-c", "from hpo.files import this_process; print(this_process())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert not process_ended(here) and process_ended(child)
    boot, namespace, number, started = child.split("/")
    me = here.split("/")[2]
    assert process_ended(f"{boot}/{namespace}/{me}/{int(started) - 1}")  # this process's number, not its start
    assert not process_ended(f"{boot}/[1]/{number}/{started}")  # another container's
    assert not process_ended(f"00000000-0000-0000-0000-000000000000/{namespace}/{number}/{started}")  # another boot
    assert not process_ended("host:1234")


def holds_a_lock(path: str) -> None:
    with open(path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        Path(f"{path}.held").touch()
        time.sleep(60)


def test_a_pool_worker_holding_a_lock_is_named_by_its_search(tmp_path):
    """A pool's worker is forked by the search's fork server: its own command line (``python -c
    from multiprocessing.forkserver import main; main(12, 14, ...``) says nothing to the user."""
    path = tmp_path / "store.lock"
    worker = multiprocessing.get_context("forkserver").Process(target=holds_a_lock, args=(str(path),))
    worker.start()
    try:
        wait_for(lambda: Path(f"{path}.held").exists(), what="the worker to take the lock")
        search = " ".join(Path("/proc/self/cmdline").read_bytes().decode().replace("\0", " ").split())
        assert holders(path) == f"process {worker.pid} (a worker of process {os.getpid()} ({search[:100]}))"
    finally:
        worker.kill()
        worker.join()


def test_a_lock_on_a_store_held_elsewhere_is_waited_for_at_most_its_timeout(any_stores, unique):
    """The lock every process of a search takes on its store (a file beside SQLite, an advisory
    lock on PostgreSQL): held by another taker, a second waits its timeout and is refused with
    ``TimeoutError``; once released, it is taken. Before, PostgreSQL's waited for ever."""
    url = any_stores["storage"]
    held, second = store_lock(url, "test", unique), store_lock(url, "test", unique, 0.5)
    with held:
        started = time.monotonic()
        with pytest.raises(TimeoutError), second:
            pass
        assert 0.5 <= time.monotonic() - started < 5
    with second:
        pass


def test_a_plain_postgresql_url_opens_as_the_readme_writes_it(postgres_url, stores, unique):
    """``--storage postgresql://USER@HOST/DB``: SQLAlchemy 2.1 opens it with psycopg 3, which
    hpo did not install (``ImportError: Failed to import DB access module``)."""
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    result = hpo.search(lambda params, trial: params["lr"], digits_space(epochs=1), strategy="grid", report=False, n_trials=2,
                        storage=plain, tracking_uri=stores["tracking_uri"], study_name=unique, experiment=unique,
                        evaluate_test=False, quiet=True)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 2
    assert len(optuna.load_study(study_name=unique, storage=postgres_url).trials) == 2  # the same study


@pytest.mark.usefixtures("fast_paths")
def test_the_reports_of_an_epoch_that_came_late_are_still_written_together(stores, unique, monkeypatch):
    """The reports' clock starts at the first value held back, not at the last write: after a
    long epoch, its members' reports wait for one another (the first was written alone)."""
    monkeypatch.setattr("hpo.store._store.REPORTS_EVERY_S", 0.2)
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=2), strategy="random", report=False, n_trials=4,
                           study_name=unique, experiment=unique, evaluate_test=False, **stores)
    store = TrialStore(stores["storage"], unique)
    store.open(prepared.plan, {})
    claims = store.claim(prepared.plan, "here:1", count=4)
    writes = WriteTransactions(store.storage.engine)
    for epoch in (1, 2):
        time.sleep(0.3)  # an epoch longer than the reports may wait
        for claim in claims:
            store.report(claim.trial_id, epoch, 0.5)
    assert writes.count == 1  # epoch 1's four reports, written with epoch 2's first
    store.write_reports()
    assert writes.count == 2
    trials = optuna.load_study(study_name=unique, storage=stores["storage"]).get_trials()
    assert [t.intermediate_values for t in trials] == [{1: 0.5, 2: 0.5}] * 4


@pytest.mark.usefixtures("fast_paths")
def test_a_population_is_claimed_reported_and_ended_in_one_write_each(any_stores, unique):
    """K trials claimed, one epoch of K reports, K trials ended: one write transaction each
    (they were K and 2K), and the study holds what Optuna's own calls would have written —
    numbers, parameters, distributions, NaN and infinite reports, states, values — but for a
    trial another process failed as lost meanwhile, which keeps that verdict and no reports."""
    space = {"lr": {"type": "float", "low": 1e-4, "high": 0.05, "log": True, "grid": [1e-3, 2e-3, 3e-3, 1e-2]}}
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=2, **space), strategy="grid", report=False, n_trials=4,
                           study_name=unique, experiment=unique, evaluate_test=False, **any_stores)
    store = TrialStore(any_stores["storage"], unique)
    store.open(prepared.plan, {})
    writes = WriteTransactions(store.storage.engine)

    claims = store.claim(prepared.plan, "here:1", count=4)
    assert writes.count == 1
    assert [c.number for c in claims] == [0, 1, 2, 3]
    values = [0.5, math.nan, math.inf, 0.25]
    for claim, value in zip(claims, values, strict=True):
        store.report(claim.trial_id, 1, value)
    lost = claims[3]
    TrialStore(any_stores["storage"], unique).fail([lost.trial_id])  # another process, on its own connection
    store.write_reports()
    assert writes.count == 2
    ended = store.finish_many([(c, TrialRecord(c.number, c.params, TrialState.PRUNED if c.number == 1 else
                                               TrialState.COMPLETE, 0.4 + c.number, metrics={"val_loss": 0.4}))
                               for c in claims])
    assert writes.count == 3
    assert [(r.state, r.reason) for r in ended][3] == (TrialState.FAILED, "worker lost")

    frozen = optuna.load_study(study_name=unique, storage=any_stores["storage"]).get_trials()
    assert [t.number for t in frozen] == [0, 1, 2, 3]
    assert [t.params for t in frozen] == [c.params for c in claims]
    assert all(t.distributions == {"lr": optuna.distributions.FloatDistribution(1e-4, 0.05, log=True)} for t in frozen)
    assert [t.state.name for t in frozen] == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL"]
    assert [t.value for t in frozen[:3]] == [0.4, 1.4, 2.4]
    assert frozen[0].intermediate_values == {1: 0.5}
    assert math.isnan(frozen[1].intermediate_values[1]) and frozen[2].intermediate_values == {1: math.inf}
    assert frozen[3].intermediate_values == {}  # ended elsewhere before its report was written
    assert [store.trials()[i].state for i in range(4)] == [r.state for r in ended]
    assert all(t.user_attrs["hpo.claim"]["worker"] == "here:1" for t in frozen)


@pytest.mark.usefixtures("fast_paths")
def test_a_claim_reads_again_only_the_trials_that_changed(stores, unique):
    """The Ray driver claims one trial at a time with many running: a claim reads the trials
    that changed state since the last (here: one that another process ended, one it failed as
    lost), not the others running nor those it ended itself, and its history is the study's,
    trial for trial."""
    space = {"lr": {"type": "float", "low": 1e-4, "high": 0.05, "log": True}}
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=2, **space), strategy="random",
                           report=False, n_trials=40, study_name=unique, experiment=unique, evaluate_test=False, **stores)
    here, there = (TrialStore(stores["storage"], unique) for _ in range(2))
    here.open(prepared.plan, {})
    running = [claim for _ in range(16) for claim in here.claim(prepared.plan, "here:1")]
    params_read = []
    sqlalchemy.event.listen(here.storage.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *args: params_read.append(
                                statement.lstrip().startswith("SELECT") and "FROM trial_params" in statement))
    here.claim(prepared.plan, "here:1")
    assert not any(params_read)  # nothing changed, and its own new trial is known without reading it

    there.finish(running[0], complete(running[0].number, running[0].params))
    there.fail([running[1].trial_id])
    ended_here = TrialRecord(running[2].number, running[2].params, TrialState.PRUNED, math.inf, reason="median",
                             metrics={"val_loss": math.inf}, curve=[(0, 2.5), (1, math.inf)], detail="at epoch 1")
    here.finish(running[2], ended_here)
    loaded = []

    def load(trial, context) -> None:
        loaded.append(trial.number)

    sqlalchemy.event.listen(models.TrialModel, "load", load)
    here.claim(prepared.plan, "here:1")
    sqlalchemy.event.remove(models.TrialModel, "load", load)
    assert sorted(loaded) == [running[0].number, running[1].number]
    assert here._records()[1] == here.trials()


def test_the_tpe_samplers_of_consecutive_trials_are_seeded_apart():
    """Each trial's TPE sampler is seeded from the search's seed and its number mixed: seeded
    with consecutive numbers (as trial seeds are), hpo's TPE reached twice bare TPE's median
    regret on the HPOLib tables (bench/quality_tabular.py)."""
    from hpo.store._store import sampler_seed

    seeds = [sampler_seed(0, number) for number in range(100)]
    assert len(set(seeds)) == 100 and seeds == [sampler_seed(0, number) for number in range(100)]
    assert len({b - a for a, b in itertools.pairwise(seeds)}) == 99
    assert sampler_seed(1, 0) not in seeds


def sampled_history(stores: dict, name: str, finished: int, strategy: str = "tpe") -> tuple:
    """A search by a sampled strategy (TPE, GP) over a learning rate, a weight decay and a width,
    with ``finished`` trials complete (value: the distance of log lr from -2.5), and its store."""
    space = digits_space(epochs=2, lr={"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                         weight_decay={"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                         hidden={"type": "categorical", "choices": [32, 64, 128]})
    prepared = hpo.prepare(lambda params, trial: 1.0, space, strategy=strategy, report=False, n_trials=400, study_name=name,
                           experiment=name, evaluate_test=False, seed=3, **stores)
    store = TrialStore(stores["storage"], name)
    store.open(prepared.plan, {})
    for _ in range(finished):
        (claim,) = store.claim(prepared.plan, "here:1")
        record = complete(claim.number, claim.params)
        store.finish(claim, replace(record, value=abs(math.log10(claim.params["lr"]) + 2.5)))
    return prepared.plan, store


def asked_of_a_copy(stores: dict, name: str, plan, numbers: range, tmp_path) -> list[dict]:
    """What the plan's Optuna sampler proposes asked one after another on a copy of the stored
    study as it is now, each sampler seeded by its trial's number, the width the first one's."""
    from hpo.store._store import SAMPLERS, sampler_seed, suggest

    copy = tmp_path / f"copy-{numbers.start}.db"
    shutil.copy(stores["storage"].removeprefix("sqlite:///"), copy)
    asked, group = [], None
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{copy}")
    for number in numbers:
        study.sampler = SAMPLERS[plan.strategy_name].sampler(sampler_seed(plan.seed, number))
        if group:
            with warnings.catch_warnings(category=optuna.exceptions.ExperimentalWarning, action="ignore"):
                study.sampler = optuna.samplers.PartialFixedSampler(group, study.sampler)
        asked.append(suggest(study.ask(), plan.space))
        group = group or {"hidden": asked[0]["hidden"]}
    return asked


@pytest.mark.parametrize("strategy", ["tpe", "gp"])
def test_a_sampled_population_is_what_asking_the_stored_study_one_trial_at_a_time_gives(stores, unique, tmp_path,
                                                                                         strategy):
    """The members of a TPE (or GP) population are what Optuna's sampler proposes asked one after
    another on the stored study (each seeded by its trial's number, the ones before it running,
    the width the first one's), though sampled in memory from one read of the study; and so are
    the next claim's, after trials ended here and elsewhere in every way (complete, pruned with
    their curves, failed as lost) and another process claimed its own."""
    plan, store = sampled_history(stores, unique, finished=12, strategy=strategy)
    asked = asked_of_a_copy(stores, unique, plan, range(12, 18), tmp_path)
    claims = store.claim(plan, "here:1", 6, shape=["hidden"])
    assert [c.params for c in claims] == asked
    assert [c.number for c in claims] == list(range(12, 18))
    assert len({c.params["lr"] for c in claims}) == 6 and len({c.params["hidden"] for c in claims}) == 1

    there = TrialStore(stores["storage"], unique)
    store.finish(claims[0], replace(complete(claims[0].number, claims[0].params), value=0.01))
    for step, value in ((1, 3.0), (2, 2.5)):
        store.report(claims[1].trial_id, step, value)
    store.finish(claims[1], TrialRecord(claims[1].number, claims[1].params, TrialState.PRUNED, 2.5, reason="median",
                                        metrics={"val_loss": 2.5}, curve=[(1, 3.0), (2, 2.5)]))
    there.fail([claims[2].trial_id])
    theirs = there.claim(plan, "there:1", 2, shape=["hidden"])
    there.finish(theirs[0], replace(complete(theirs[0].number, theirs[0].params), value=0.02))
    asked = asked_of_a_copy(stores, unique, plan, range(20, 24), tmp_path)
    assert [c.params for c in store.claim(plan, "here:1", 4, shape=["hidden"])] == asked
    stored = optuna.load_study(study_name=unique, storage=stores["storage"]).trials
    assert [(t.params, t.state, t.values, t.intermediate_values) for t in store._mirror.study.trials] == [
        (t.params, t.state, t.values, t.intermediate_values) for t in stored]  # the mirror holds what TPE reads


@pytest.mark.parametrize("strategy", ["tpe", "gp"])
def test_a_sampled_claim_that_fails_leaves_no_sample_behind(stores, unique, tmp_path, monkeypatch, strategy):
    """Samples of a claim whose trials were never created (the write failed) would run in the
    mirror for ever, TPE's constant liar (GP's batch acquisition) counting them: the next claim
    proposes as if they had never been drawn."""
    plan, store = sampled_history(stores, unique, finished=12, strategy=strategy)
    store.claim(plan, "here:1", 2, shape=["hidden"])
    writes = store.writes

    def refused(*args):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(writes, "add_trials", refused)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        store.claim(plan, "here:1", 3, shape=["hidden"])
    monkeypatch.undo()
    asked = asked_of_a_copy(stores, unique, plan, range(14, 17), tmp_path)
    assert [c.params for c in store.claim(plan, "here:1", 3, shape=["hidden"])] == asked


def test_a_tpe_claim_reads_the_study_once_and_writes_it_once_for_every_64_trials(stores, unique):
    """A population of 64 TPE trials is one read of the study's trials and one write. Before,
    each sample asked the stored study, which read every trial again and wrote each parameter:
    a claim of 1024 rows took 256 s on the 2-core machine (now 1 s), holding the study's lock.
    A larger claim takes the lock once for every 64, letting other processes claim between."""
    plan, store = sampled_history(stores, unique, finished=12)
    trial_reads = []
    sqlalchemy.event.listen(store.storage.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *args: trial_reads.append(
                                statement.lstrip().startswith("SELECT") and "FROM trials" in statement))
    writes = WriteTransactions(store.storage.engine)
    claims = store.claim(plan, "here:1", 64, shape=["hidden"])
    assert len(claims) == 64 and len({c.params["lr"] for c in claims}) == 64
    assert writes.count == 1
    assert sum(trial_reads) <= 4

    more = store.claim(plan, "here:1", 130, shape=["hidden"])
    assert [c.number for c in more] == list(range(12 + 64, 12 + 64 + 130))
    assert len({c.params["hidden"] for c in more}) == 1 and len({c.params["lr"] for c in more}) == 130
    assert writes.count == 1 + 3


def test_a_process_that_keeps_the_study_lock_is_named_instead_of_waited_for_ever(any_stores, unique, monkeypatch,
                                                                                   caplog):
    """A worker stopped with Ctrl-Z while it held the study's lock: its peers waited for ever,
    silently. A claim now says whom it waits for, then gives up at the limit, naming the process
    that holds the lock (on SQLite, from the kernel's table of locks: its command line, and that
    it is stopped; on PostgreSQL, from the name its connection gave the server)."""
    monkeypatch.setattr("hpo.store._locks.STUDY_LOCK_S", 1.5)
    monkeypatch.setattr("hpo.store._locks.SAID_AFTER_S", 0.5)
    caplog.set_level("WARNING", logger="hpo")
    url = any_stores["storage"]
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=1), strategy="random", report=False, n_trials=4,
                           study_name=unique, experiment=unique, evaluate_test=False, **any_stores)
    store = TrialStore(url, unique)
    store.open(prepared.plan, {})
    holding = ("import os, signal, sys\nfrom hpo.files import store_lock\n"
               f"held = store_lock({url!r}, 'claim', {unique!r})\nheld.__enter__()\n"
               "print('held', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\n")
    holder = subprocess.Popen([sys.executable, "-c", holding], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(hpo.HpoError, match=f"process {holder.pid}") as refused:
            store.claim(prepared.plan, "here:1")
        assert time.monotonic() - started < 15
        assert f"the lock of study {unique!r}" in str(refused.value) and refused.value.argument == "storage"
        if url.startswith("postgresql"):
            assert re.search(r"SELECT pg_terminate_backend\(\d+\) ends it on the server\)", str(refused.value))
        if url.startswith("sqlite"):
            assert "-c import os, signal" in str(refused.value) and "stopped (Ctrl-Z?" in str(refused.value)
        assert not store.trials()  # nothing was claimed
        (waiting,) = [r.getMessage() for r in caplog.records if r.name == "hpo"]  # said once, on the way
        assert waiting.startswith(f"hpo: waiting for the lock of study {unique!r}, which another process has held for "
                                  f"0.5 s (process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert len(store.claim(prepared.plan, "here:1")) == 1  # the lock went with its holder


def test_only_a_study_this_run_created_and_that_never_started_a_trial_is_discarded(stores, unique):
    """What a search stopped before its first trial deletes: never a study with a trial, nor one
    another run opened since (two searches of one study started at once)."""
    first, second = opened(stores, unique)
    assert first.store.discard_unstarted()
    assert unique not in optuna.get_all_study_names(stores["storage"])

    first, second = opened(stores, unique)
    second.store.open(second.plan, first.tracker.identity())  # another run of the search, at once
    assert not first.store.discard_unstarted() and not second.store.discard_unstarted()  # the second: session 2

    other = unique + "-claimed"
    (loop, _) = opened(stores, other)
    loop.store.claim(loop.plan, "here:1")
    assert not loop.store.discard_unstarted()
    assert {unique, other} <= set(optuna.get_all_study_names(stores["storage"]))


def test_a_study_that_fails_as_it_opens_is_undone_at_once(any_stores, unique, monkeypatch):
    """The study was created, then writing its plan failed: the undoing takes the study's lock
    again, which on PostgreSQL is no lock the process already holds (it was undone under it, and
    waited the lock's whole limit for itself)."""
    monkeypatch.setattr("hpo.store._locks.STUDY_LOCK_S", 3.0)
    opened = TrialStore.open

    def fails_after_creating(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        raise OSError("the disk is full")

    monkeypatch.setattr(TrialStore, "open", fails_after_creating)
    with pytest.raises(OSError, match="the disk is full"):
        hpo.search(lambda params, trial: 1.0, digits_space(epochs=1), strategy="grid", report=False, n_trials=2, study_name=unique,
                   experiment=unique, evaluate_test=False, quiet=True, **any_stores)
    assert left_behind(any_stores, unique, unique) == []


def test_a_gp_claim_holds_the_study_lock_for_8_samples_at_a_time(stores, unique):
    """A GP sample fits the process again (a quarter second or more): a population of GP trials
    is claimed 8 at a time, letting other processes claim between, as TPE's is 64 at a time."""
    plan, store = sampled_history(stores, unique, finished=12, strategy="gp")
    writes = WriteTransactions(store.storage.engine)
    claims = store.claim(plan, "here:1", 10, shape=["hidden"])
    assert [c.number for c in claims] == list(range(12, 22)) and len({c.params["hidden"] for c in claims}) == 1
    assert len({c.params["lr"] for c in claims}) == 10
    assert writes.count == 2
