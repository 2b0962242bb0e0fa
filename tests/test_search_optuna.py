"""The trial of a search killed mid-trial is found (by its process, or its heartbeat); Ctrl-C
closes the running trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

import hpo
from conftest import ROOT, child_runs, digits_space
from hpo import TrialState
from hpo.loop import TrialLoop
from hpo.store import TrialStore, to_record

HANGING_SEARCH = """
import dataclasses, sys, time, pathlib
import hpo
from hpo.store import TrialStore
sys.path.insert(0, {tests!r})
from conftest import digits_space

def objective(params, trial):
    if trial.number == 1:
        pathlib.Path({marker!r}).touch()
        time.sleep(600)  # killed here, mid-trial
    return 1.0 / params["lr"]

prepared = hpo.prepare(objective, digits_space(epochs=1), strategy="grid", report=False, n_trials=3, study_name={name!r},
                       experiment={name!r}, storage={storage!r}, tracking_uri={tracking_uri!r}, evaluate_test=False)
store = TrialStore({storage!r}, {name!r}, heartbeat_interval=1, grace_period=2)
dataclasses.replace(prepared, store=store).run()
"""


class Notices(hpo.SearchListener):
    def __init__(self) -> None:
        self.said: list[str] = []

    def notice(self, text: str) -> None:
        self.said.append(text)


def test_a_killed_search_resumes_and_its_lost_trial_is_recorded_once(tmp_path, stores, unique):
    marker = tmp_path / "trial-1-started"
    script = HANGING_SEARCH.format(tests=str(ROOT / "tests"), marker=str(marker), name=unique, **stores)
    process = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    def objective(params, trial):
        return 1.0 / params["lr"]

    # At once: its process ran on this machine and has ended (its heartbeat has 20 s to go stale).
    result = hpo.search(objective, digits_space(epochs=1), strategy="grid", report=False, n_trials=3, study_name=unique,
                        experiment=unique, evaluate_test=False, keep_study=True, listener=(heard := Notices()), **stores)
    # MLflow may first be repaired, where the killed process had not yet written trial 0's end.
    said = [text for text in heard.said if not text.startswith("MLflow: ")]
    assert said[0] == "trial 1 was left running by a process that has ended: failed as 'worker lost'"
    assert not [said for said in heard.said if "interrupted or lost" in said]  # said once, not twice

    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    lost = [t for t in study.trials if to_record(t).reason == "worker lost"]
    assert len(lost) == 1 and lost[0].state.name == "FAIL" and lost[0].number == 1
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3  # the lost point ran again
    assert sorted(t.params["lr"] for t in result.trials) == [1e-3, 3e-3, 1e-2]
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    by_trial = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["hpo.trial_number"]), []).append(run)
    assert sorted(by_trial) == [t.number for t in study.trials]  # every trial once in MLflow
    assert all(len(r) == 1 for r in by_trial.values())
    assert by_trial[1][0].info.status == "FAILED" and by_trial[1][0].data.tags["hpo.reason"] == "worker lost"


def test_ctrl_c_closes_the_running_trial_and_a_rerun_runs_it_again(stores, unique):
    def interrupted_at_trial_1(params, trial):
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of training
            time.sleep(10)
        return 1.0 / params["lr"]

    options = dict(strategy="grid", n_trials=3, study_name=unique, experiment=unique, evaluate_test=False, **stores)
    with pytest.raises(KeyboardInterrupt):
        hpo.search(interrupted_at_trial_1, digits_space(epochs=1), **options)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]

    # The objective is fixed (here: another function); the study goes on with its trials.
    heard = Notices()
    result = hpo.search(lambda params, trial: 1.0 / params["lr"], digits_space(epochs=1), keep_study=True,
                        listener=heard, **options)
    assert f"1 trial interrupted or lost in an earlier run of study {unique!r} runs again" in heard.said
    assert [(t.number, t.state.value) for t in result.trials] == [(0, "complete"), (2, "complete"), (3, "complete")]
    assert sorted(t.params["lr"] for t in result.trials) == [1e-3, 3e-3, 1e-2]
    runs = {int(r.data.tags["hpo.trial_number"]): r for r in child_runs(stores["tracking_uri"], result.parent_run_id)}
    assert sorted(runs) == [0, 1, 2, 3]
    assert runs[1].info.status == "FAILED" and runs[1].data.tags["hpo.reason"] == "interrupted"


def test_a_trial_that_only_looked_stale_is_not_failed(stores, unique):
    """A stalled machine, or a clock stepped forward, makes a live trial's heartbeat look old;
    it beats again before the second look, while a dead trial's never does."""
    store = TrialStore(stores["storage"], unique, heartbeat_interval=1, grace_period=3)
    prepared = hpo.prepare(lambda params, trial: 1.0, digits_space(epochs=1), strategy="grid", report=False, n_trials=3,
                           study_name=unique, experiment=unique, evaluate_test=False, **stores)
    prepared.tracker.start_search(prepared.plan, None)
    store.open(prepared.plan, prepared.tracker.identity())
    loop = TrialLoop(prepared.plan, store, prepared.tracker)
    alive, dead = store.claim(prepared.plan, "here:1", count=2)
    for trial in (alive, dead):
        store.writes.beat([trial.trial_id])
    time.sleep(4.5)  # both silent past the grace period (SQLite keeps whole seconds: 3 s could read as 3)

    loop.reap()  # first look: both suspected, neither failed
    assert {t.state.name for t in store.study.get_trials()} == {"RUNNING"}
    store.writes.beat([alive.trial_id])  # it was alive after all
    time.sleep(2.1)  # two heartbeat intervals
    loop.reap()

    states = {t.number: (t.state.name, to_record(t).reason or None) for t in store.study.get_trials()}
    assert states == {alive.number: ("RUNNING", None), dead.number: ("FAIL", "worker lost")}
