"""The trial store under races: two processes failing the same lost trial, a trial finishing
while another process fails it. Each process has its own connection to one real SQLite store."""

from __future__ import annotations

import threading
import time

import hpo
from conftest import child_runs, digits_space
from hpo import TrialRecord, TrialState
from hpo.loop import TrialLoop
from hpo.store import TrialStore


def opened(stores: dict, name: str, processes: int = 2) -> list[TrialLoop]:
    """A started search and one trial loop per process, each with its own store connection."""
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=1), strategy="grid", n_trials=3,
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
    first.store.storage.record_heartbeat(claim.trial_id)
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
    record = owner.finish(started, complete(started.claim.number, started.claim.params))
    assert (record.state, record.reason) == (TrialState.FAILED, "worker lost")
    (trial,) = owner.store.trials()
    assert (trial.state, trial.reason) == (TrialState.FAILED, "worker lost")
    owner.tracker.flush()  # MLflow is written in the background
    runs = child_runs(stores["tracking_uri"], owner.tracker.parent_run_id)
    assert [(r.info.status, r.data.tags["hpo.reason"]) for r in runs] == [("FAILED", "worker lost")]
