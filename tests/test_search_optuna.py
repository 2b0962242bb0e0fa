"""End to end on real training, a real Optuna storage and a real MLflow store."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from mlflow import MlflowClient

import hpo
from hpo import TrialState
from hpo.drivers import OptunaDriver
from hpo.strategies import BaseStrategy, Suggestion, params_key
from objectives import digits_mlp

from conftest import ROOT, child_runs, digits_space

STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


class ListStrategy(BaseStrategy):
    """Suggests the given configurations in order: a strategy whose trials a test can predict."""

    name = "list"

    def __init__(self, configs: list[dict]) -> None:
        super().__init__(0)
        self.configs = configs

    def suggest(self, space, history, n_trials):
        return Suggestion(self.configs[len(history)]) if len(history) < len(self.configs) else None


def boom_at_002(params, trial):
    if params["lr"] == 0.02:
        raise RuntimeError("boom")
    return digits_mlp(params, trial)


boom_at_002.test = digits_mlp.test


def test_every_ending_is_recorded_and_the_search_goes_on(stores, unique):
    configs = [{"lr": lr} for lr in (1e-2, 5e-3, 3e-3, 2e-3, 1e-3)]  # five that complete
    configs += [{"lr": 1e-6}, {"lr": 40.0}, {"lr": 0.02}, {"lr": 4e-3}]  # stalls, diverges, raises, completes
    space = digits_space(epochs=4, lr={"type": "float", "low": 1e-6, "high": 50.0, "log": True})
    result = hpo.search(
        boom_at_002, space, strategy=ListStrategy(configs), n_trials=20, pruner="median",
        experiment=unique, **stores,
    )
    states = [(t.state.value, t.reason) for t in result.trials]
    assert states == [("complete", "")] * 5 + [("pruned", "median"), ("pruned", "diverged"), ("failed", "RuntimeError: boom"), ("complete", "")]
    assert result.best.params["lr"] in (1e-2, 5e-3, 3e-3, 4e-3)
    assert 0.5 < result.test_metrics["accuracy"] <= 1.0

    runs = {int(r.data.tags["hpo.trial_number"]): r for r in child_runs(stores["tracking_uri"], result.parent_run_id)}
    assert sorted(runs) == [t.number for t in result.trials]  # child runs = trials, exactly
    client = MlflowClient(stores["tracking_uri"])
    for trial in result.trials:
        run = runs[trial.number]
        assert run.info.status == STATUS[trial.state.value]
        assert run.data.tags["hpo.state"] == trial.state.value
        assert run.data.tags["hpo.reason"] == trial.reason
        assert run.data.tags["hpo.stage"] == "0" and run.data.tags["hpo.device"] == "cpu"
        assert float(run.data.params["lr"]) == trial.params["lr"]
        assert run.data.metrics["duration_s"] > 0
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        if trial.state is TrialState.COMPLETE:
            assert [m.step for m in curve] == list(range(int(trial.metrics["epochs"]) + 1))
            assert run.data.metrics["final_val_accuracy"] == trial.metrics["val_accuracy"]
        elif trial.reason == "median":
            assert len(curve) == 3  # steps 0, 1, 2: pruned as soon as warm-up ended
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert {k: parent.data.params[k] for k in ("strategy", "driver", "n_trials", "seed", "pruner")} == {
        "strategy": "list", "driver": "optuna", "n_trials": "20", "seed": "0", "pruner": "median"}
    assert parent.data.metrics["test_accuracy"] == result.test_metrics["accuracy"]
    assert {"best_config.json", "leaderboard.csv", "space.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    study = optuna.load_study(study_name=result.study_name, storage=stores["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5 + ["PRUNED", "PRUNED", "FAIL", "COMPLETE"]


def test_a_rerun_resumes_without_repeating_a_trial(stores, unique):
    space = digits_space(epochs=2, lr={"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": 6})
    options = dict(strategy="grid", experiment=unique, study_name=unique, **stores)
    first = hpo.search("digits_mlp", space, n_trials=3, **options)
    second = hpo.search("digits_mlp", space, n_trials=5, **options)
    third = hpo.search("digits_mlp", space, n_trials=5, **options)

    assert len(first.trials) == 3 and len(second.trials) == 5
    assert second.trials[:3] == first.trials  # the same trials, not re-run
    assert third.trials == second.trials
    assert len({params_key(t.params) for t in second.trials}) == 5
    assert first.parent_run_id == second.parent_run_id == third.parent_run_id
    assert len(child_runs(stores["tracking_uri"], second.parent_run_id)) == 5
    assert third.test_metrics == second.test_metrics  # tested once for the same best trial


def test_grid_stops_when_every_point_has_run(stores, unique):
    space = digits_space(epochs=1)  # three grid points
    result = hpo.search("digits_mlp", space, strategy="grid", n_trials=10, experiment=unique, evaluate_test=False, **stores)
    assert sorted(t.params["lr"] for t in result.trials) == [1e-3, 3e-3, 1e-2]


def test_tpe_runs_inside_the_bounds(stores, unique):
    def objective(params, trial):
        for step in range(3):
            trial.report(step, loss=(params["lr"] - 0.01) ** 2 + 1 / (step + 1))
        return (params["lr"] - 0.01) ** 2

    space = hpo.SearchSpace.model_validate(
        {"name": "tpe", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                    "units": {"type": "int", "low": 1, "high": 4}}})
    result = hpo.search(objective, space, strategy="tpe", n_trials=12, experiment=unique, **stores)
    assert len(result.trials) == 12 and all(space.contains(t.params) for t in result.trials)
    assert result.count(TrialState.COMPLETE) == 12


def test_a_changed_space_under_the_same_study_is_refused(stores, unique):
    options = dict(strategy="grid", n_trials=1, study_name=unique, experiment=unique, evaluate_test=False, **stores)
    hpo.search("digits_mlp", digits_space(epochs=1), **options)
    with pytest.raises(hpo.HpoError, match="different version of space"):
        hpo.search("digits_mlp", digits_space(epochs=2), **options)


HANGING_SEARCH = """
import dataclasses, sys, time, pathlib
import hpo
from hpo.drivers import OptunaDriver
sys.path.insert(0, {tests!r})
from conftest import digits_space

def objective(params, trial):
    if trial.number == 1:
        pathlib.Path({marker!r}).touch()
        time.sleep(600)  # killed here, mid-trial
    return 1.0 / params["lr"]

prepared = hpo.prepare(objective, digits_space(epochs=1), strategy="grid", n_trials=3, study_name={name!r},
                       experiment={name!r}, storage={storage!r}, tracking_uri={tracking_uri!r}, evaluate_test=False)
driver = OptunaDriver({storage!r}, heartbeat_interval=1, grace_period=2)
dataclasses.replace(prepared, driver=driver).run()
"""


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
    time.sleep(3)  # past the grace period: the trial's heartbeat has gone stale

    def objective(params, trial):
        return 1.0 / params["lr"]

    prepared = hpo.prepare(objective, digits_space(epochs=1), strategy="grid", n_trials=3, study_name=unique,
                           experiment=unique, evaluate_test=False, **stores)
    result = dataclasses.replace(prepared, driver=OptunaDriver(stores["storage"], heartbeat_interval=1, grace_period=2)).run()

    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    lost = [t for t in study.trials if t.user_attrs.get("hpo.result", {}).get("reason") == "interrupted"]
    assert len(lost) == 1 and lost[0].state.name == "FAIL" and lost[0].number == 1
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3  # the lost point ran again
    assert sorted(t.params["lr"] for t in result.trials) == [1e-3, 3e-3, 1e-2]
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    by_trial = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["hpo.trial_number"]), []).append(run)
    assert sorted(by_trial) == [t.number for t in study.trials]  # every trial once in MLflow
    assert all(len(r) == 1 for r in by_trial.values())
    assert by_trial[1][0].info.status == "FAILED" and by_trial[1][0].data.tags["hpo.reason"] == "interrupted"
