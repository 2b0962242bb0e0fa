"""One suite for every driver: the same search on Optuna, on Ray and simulated must be recorded alike.

Real parts throughout: training on scikit-learn's digits, one trial store (an Optuna SQLite
storage) for every engine, a local Ray instance (started once for this module) running two
trials at a time, two virtual workers for the simulation (each trial's wall time as its
simulated time), one MLflow SQLite store. Where an expectation holds only with trials one at a
time (a pruner comparing with the trials finished before), the test says ``sequential=True``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import sys

import pytest
from mlflow import MlflowClient

import hpo
import hpo.strategies
from conftest import ROOT, child_runs, digits_space, left_behind
from hpo import TrialState
from hpo.drivers.simulated import SimulatedOptions
from hpo.store import TrialStore
from hpo.strategies import params_key
from predictable import (
    SCRIPTED,
    ListStrategy,
    MissingData,
    SetupLog,
    SlowSetup,
    Warm,
    boom_at_002,
    fails_until_fixed,
    killed_once,
    late,
    plateau,
    quadratic,
    quick_then_slow,
    scripted,
    steady,
)

STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
DRIVERS = ["optuna", "ray", "simulated"]


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module; its workers import this folder's modules."""
    import ray

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), before or ""])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


def driver_options(name: str, sequential: bool = False):
    """The engine's options in this suite: Ray and the simulation run two trials at a time unless
    ``sequential``."""
    if name == "simulated":
        return SimulatedOptions(workers=1 if sequential else 2)
    return hpo.RayOptions(max_concurrent=1 if sequential else 2) if name == "ray" else hpo.OptunaOptions(workers=1)


@pytest.fixture(params=DRIVERS)
def engine(request, stores, tmp_path):
    """A function that runs ``hpo.prepare(...)`` on this driver."""
    name = request.param
    if name == "ray":
        request.getfixturevalue("ray_local")

    def run(objective, space, listener=None, sequential=False, store=None, report=False, **options):
        """The search's report is drawn where a test looks at it (``report=True``): it is a
        third of a short search's time, and its own tests are in test_comparing_trials.py."""
        prepared = hpo.prepare(objective, space, driver=driver_options(name, sequential), home=tmp_path, **stores,
                               report=report, **options)
        if store is not None:  # a store with other heartbeat settings
            prepared = dataclasses.replace(prepared, store=store)
        return prepared.run(listener)

    run.name = name
    return run


def test_every_ending_is_recorded_and_the_search_goes_on(engine, stores, unique):
    configs = [{"lr": lr} for lr in (1e-2, 5e-3, 3e-3, 2e-3, 1e-3)]  # five that complete
    configs += [{"lr": 1e-6}, {"lr": 40.0}, {"lr": 0.02}, {"lr": 4e-3}]  # stalls, diverges, raises, completes
    space = digits_space(epochs=4, lr={"type": "float", "low": 1e-6, "high": 50.0, "log": True})
    result = engine(boom_at_002, space, strategy=ListStrategy(configs), n_trials=20, pruner="median",
                    experiment=unique, study_name=unique, sequential=True, report=True)
    states = [(t.state.value, t.reason) for t in result.trials]
    assert states == [("complete", "")] * 5 + [("pruned", "median"), ("pruned", "diverged"),
                                               ("failed", "RuntimeError: boom"), ("complete", "")]
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
        assert run.data.tags["hpo.node"]
        assert float(run.data.params["lr"]) == trial.params["lr"]
        assert run.data.metrics["duration_s"] > 0
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        if trial.state is TrialState.COMPLETE:
            assert [m.step for m in curve] == list(range(1, int(trial.metrics["epochs"]) + 1))
            assert run.data.metrics["final_val_accuracy"] == trial.metrics["val_accuracy"]
        elif trial.reason == "median":
            assert 1 <= len(curve) < 4  # stopped before its last epoch
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert {k: parent.data.params[k] for k in ("strategy", "driver", "n_trials", "seed", "pruner")} == {
        "strategy": "list", "driver": engine.name, "n_trials": "20", "seed": "0", "pruner": "median"}
    assert parent.data.metrics["test_accuracy"] == result.test_metrics["accuracy"]
    assert {"best_config.json", "leaderboard.csv", "space.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_rerun_resumes_without_repeating_a_trial(engine, stores, unique):
    space = digits_space(epochs=2, lr={"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": 6})
    options = dict(strategy="grid", experiment=unique, study_name=unique)
    first = engine("digits_mlp", space, n_trials=3, **options)
    second = engine("digits_mlp", space, n_trials=5, **options)
    third = engine("digits_mlp", space, n_trials=5, **options)

    assert len(first.trials) == 3 and len(second.trials) == 5
    assert second.trials[:3] == first.trials  # the same trials, not re-run
    assert third.trials == second.trials
    assert len({params_key(t.params) for t in second.trials}) == 5
    assert first.parent_run_id == second.parent_run_id == third.parent_run_id
    assert len(child_runs(stores["tracking_uri"], second.parent_run_id)) == 5
    assert third.test_metrics == second.test_metrics  # tested once for the same best trial


def test_grid_stops_when_every_point_has_run(engine, unique):
    result = engine("digits_mlp", digits_space(epochs=1), strategy="grid", n_trials=10, experiment=unique,
                    study_name=unique, evaluate_test=False)
    assert sorted(t.params["lr"] for t in result.trials) == [1e-3, 3e-3, 1e-2]


@pytest.mark.parametrize("strategy", ["tpe", "gp"])
def test_sampled_strategies_run_inside_the_bounds(engine, unique, strategy):
    """Past GP's 10 random trials too."""
    space = hpo.SearchSpace.model_validate(
        {"name": "sampled", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                    "units": {"type": "int", "low": 1, "high": 4}}})
    result = engine(quadratic, space, strategy=strategy, n_trials=13, experiment=unique, study_name=unique)
    assert len(result.trials) == 13 and all(space.contains(t.params) for t in result.trials)
    assert result.count(TrialState.COMPLETE) == 13


def test_coarse_to_fine_tags_stages_and_narrows(engine, stores, unique):
    space = hpo.SearchSpace.model_validate(
        {"name": "c2f", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}}})
    result = engine(quadratic, space, strategy="coarse-to-fine", n_trials=9, experiment=unique, study_name=unique)
    assert [sum(t.stage == s for t in result.trials) for s in range(3)] == [3, 3, 3]
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    assert sorted(r.data.tags["hpo.stage"] for r in runs) == ["0"] * 3 + ["1"] * 3 + ["2"] * 3


def test_a_changed_space_under_the_same_study_is_refused_before_writing(engine, stores, unique):
    options = dict(strategy="grid", n_trials=1, study_name=unique, experiment=unique, evaluate_test=False)
    first = engine("digits_mlp", digits_space(epochs=1), **options)
    with pytest.raises(hpo.HpoError, match="different version of space"):
        engine("digits_mlp", digits_space(epochs=2), **options)
    parent = MlflowClient(stores["tracking_uri"]).get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"  # untouched by the refused search


def test_both_drivers_find_the_same_trials_and_record_them_alike(stores, unique, tmp_path, request):
    """Parity: one grid space, one seed, on both drivers, one trial per worker (Ray trains no populations)."""
    request.getfixturevalue("ray_local")
    space = digits_space(epochs=2)
    results = {}
    for name in DRIVERS:
        results[name] = hpo.search("digits_mlp", space, driver=driver_options(name), strategy="grid", n_trials=3,
                                   seed=1, experiment=f"{unique}-{name}", study_name=f"{unique}-{name}", home=tmp_path,
                                   evaluate_test=False, population=1, **stores)
    configs = {name: sorted(params_key(t.params) for t in r.trials) for name, r in results.items()}
    assert configs["optuna"] == configs["ray"] == configs["simulated"]
    client = MlflowClient(stores["tracking_uri"])
    layouts = {}
    for name, result in results.items():
        runs = child_runs(stores["tracking_uri"], result.parent_run_id)
        tags = {frozenset(k for k in r.data.tags if k.startswith("hpo.")) for r in runs}
        metrics = {frozenset(r.data.metrics) for r in runs}
        series = {len(client.get_metric_history(r.info.run_id, "val_loss")) for r in runs}
        layouts[name] = (len(runs), tags, metrics, series, {r.info.status for r in runs})
    assert layouts["optuna"] == layouts["ray"] == layouts["simulated"]


def test_a_trial_lost_with_its_process_is_failed_and_planned_again(engine, stores, unique):
    """A trial whose process died (its heartbeat stopped) is failed as "worker lost" by the
    next run, keeps its one child run, and its configuration runs again."""
    space = digits_space(epochs=1)
    options = dict(strategy="grid", study_name=unique, experiment=unique, evaluate_test=False)
    first = engine("digits_mlp", space, n_trials=2, **options)
    store = TrialStore(stores["storage"], unique, heartbeat_interval=1, grace_period=2)
    prepared = hpo.prepare("digits_mlp", space, n_trials=3, **stores, **options)
    (dead,) = store.claim(prepared.plan, "elsewhere:1")  # its process died here, after one heartbeat
    store.writes.beat([dead.trial_id])

    result = engine("digits_mlp", space, n_trials=3, store=store, **options)
    # The lost trial takes no place in the budget; its retry does.
    assert [(t.number, t.state.value) for t in result.trials] == [(0, "complete"), (1, "complete"), (3, "complete")]
    assert result.trials[2].params == dead.params  # the lost configuration ran again
    assert dead.params not in [t.params for t in first.trials]
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    assert sorted(int(r.data.tags["hpo.trial_number"]) for r in runs) == [0, 1, 2, 3]
    lost = next(r for r in runs if r.data.tags["hpo.trial_number"] == "2")
    assert lost.info.status == "FAILED" and lost.data.tags["hpo.reason"] == "worker lost"
    retry = next(r for r in runs if r.data.tags["hpo.trial_number"] == "3")
    assert retry.data.tags["hpo.retry_of"] == "2"


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_configurations_that_failed_between_completed_ones_run_again_in_their_own_places(engine, unique, tmp_path,
                                                                                         strategy):
    """Random search draws trial i from ``(seed, i)``, and a rerun counted i from the trials left
    in the budget: those that failed before a completed one did not run again, while completed
    ones were drawn a second time; TPE sampled new ones in their place. Nor does a rerun whose
    first trials fail again stop the search (the study has completed trials), or the next one
    refuse a budget that retries filled."""
    space = hpo.SearchSpace.model_validate({
        "name": "fails", "metric": "loss", "direction": "minimize",
        "params": {"lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}},
        "fixed": {"fixed_when": str(tmp_path / "fixed")}})
    options = dict(strategy=strategy, n_trials=8, study_name=unique, experiment=unique, evaluate_test=False)
    first = engine(fails_until_fixed, space, **options)
    drawn = sorted(params_key(t.params) for t in first.trials)
    failed = [t.number for t in first.trials if t.state is TrialState.FAILED]
    assert failed and min(failed) < max(t.number for t in first.trials if t.state is TrialState.COMPLETE)

    again = engine(fails_until_fixed, space, **options)  # not fixed yet: each fails again, and the search goes on
    assert sorted(params_key(t.params) for t in again.trials) == drawn
    assert sum(t.state is TrialState.FAILED for t in again.trials) == len(failed)

    (tmp_path / "fixed").touch()
    fixed = engine(fails_until_fixed, space, **options)
    assert [t.state for t in fixed.trials] == [TrialState.COMPLETE] * 8
    assert sorted(params_key(t.params) for t in fixed.trials) == drawn  # the same eight, each once


def test_the_cli_progress_bar_hears_every_trial(engine, unique):
    """The bar holds locks and a console: it stays in the search's process, out of what travels to workers."""
    from rich.console import Console
    from rich.progress import Progress

    from hpo.reporting._terminal import ProgressBar

    with Progress(console=Console(file=io.StringIO())) as progress:
        bar = ProgressBar(progress, 3, "val_loss", "minimize")
        result = engine("digits_mlp", digits_space(epochs=1), strategy="grid", n_trials=3,
                        experiment=unique, study_name=unique, evaluate_test=False, listener=bar)
    assert bar.counts[TrialState.COMPLETE] == 3 == len(result.trials)
    assert progress.tasks[0].completed == 3


@pytest.mark.parametrize("pruner", ["successive-halving", "hyperband"])
def test_halving_pruners_stop_the_worse_trials_early(engine, stores, unique, pruner):
    lrs = [1e-2, 2e-2, 5e-3, 3e-2, 1e-1, 1e-3, 3e-1, 1e-4, 1.0, 1e-5, 3.0, 1e-6]  # worse and worse
    space = hpo.SearchSpace.model_validate(
        {"name": "halving", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-6, "high": 3.0, "log": True}}})
    result = engine(plateau, space, strategy=ListStrategy([{"lr": lr} for lr in lrs]), n_trials=12,
                    pruner=pruner, experiment=unique, study_name=unique)
    pruned = [t for t in result.trials if t.state is TrialState.PRUNED]
    assert pruned and all(t.reason == pruner for t in pruned)
    assert result.trials[0].state is TrialState.COMPLETE  # the best is never stopped
    runs = {int(r.data.tags["hpo.trial_number"]): r for r in child_runs(stores["tracking_uri"], result.parent_run_id)}
    client = MlflowClient(stores["tracking_uri"])
    for trial in pruned:
        assert runs[trial.number].info.status == "KILLED"
        assert len(client.get_metric_history(runs[trial.number].info.run_id, "loss")) < 10


@pytest.mark.parametrize("pruner", ["median", "successive-halving", "hyperband"])
def test_both_drivers_prune_the_same_trials_at_the_same_epochs(request, stores, unique, tmp_path, pruner):
    """One pruning package decides for both drivers, from the same reports: the same search
    (trials one at a time) stops the same trials at the same epochs, saying the same."""
    request.getfixturevalue("ray_local")
    lrs = [1e-2, 2e-2, 5e-3, 3e-2, 1e-1, 1e-3, 3e-1, 1e-4, 1.0, 1e-5, 3.0, 1e-6]
    space = hpo.SearchSpace.model_validate(
        {"name": "halving", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-6, "high": 3.0, "log": True}}})
    ended = {}
    for name in DRIVERS:
        (tmp_path / name).mkdir()  # a study of the same name each (Hyperband's brackets follow it), apart
        result = hpo.search(plateau, space, driver=driver_options(name, sequential=True), pruner=pruner,
                            strategy=ListStrategy([{"lr": lr} for lr in lrs]), n_trials=12, home=tmp_path / name,
                            experiment=unique + name, study_name="halving", evaluate_test=False,
                            storage=f"sqlite:///{tmp_path / name / 'optuna.db'}", tracking_uri=stores["tracking_uri"])
        ended[name] = [(t.number, t.state.value, t.detail, len(t.curve)) for t in result.trials]
    assert ended["optuna"] == ended["ray"] == ended["simulated"]
    assert sum(state == "pruned" for _, state, _, _ in ended["optuna"]) >= 3


SCRIPTED_SPACE = hpo.SearchSpace.model_validate(
    {"name": "scripted", "metric": "loss", "direction": "minimize", "fixed": {"epochs": 4},
     "params": {"lr": {"type": "float", "low": 1.0, "high": 8.0}}})


def test_the_median_rule_decides_alike_on_both_drivers(engine, unique):
    """Optuna's median rule, over every trial that reached the epoch: after the warm-up (epoch 2
    of 4, five trials), a trial stops once its best loss so far is above the median of the
    others' losses at that epoch, a pruned trial's included. Tune's own MedianStoppingRule
    compares running means instead, and would let trial 5 finish."""
    result = engine(scripted, SCRIPTED_SPACE, strategy=ListStrategy([{"lr": lr} for lr in SCRIPTED]), n_trials=8,
                    pruner="median", experiment=unique, study_name=unique, sequential=True, evaluate_test=False)
    assert [(t.state.value, t.detail) for t in result.trials] == [("complete", "")] * 5 + [
        ("pruned", "at epoch 4: 0.31 > median 0.3 of 5 trials"),
        ("pruned", "at epoch 2: 0.6 > median 0.495 of 6 trials"),
        ("complete", ""),
    ]
    assert [t.reason for t in result.trials if t.state is TrialState.PRUNED] == ["median", "median"]


class Heard(hpo.SearchListener):
    """What a user's listener hears: each trial starting, then ending; the search's notices."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.notices: list[str] = []

    def notice(self, text):
        self.notices.append(text)

    def running(self, numbers):
        self.events += [("running", n) for n in numbers]

    def trial_finished(self, trial):
        self.events.append(("finished", trial.number))


def test_a_users_listener_hears_every_trial_start_and_end(engine, unique):
    """In this process and on Ray: ``running`` before ``trial_finished``, once each."""
    heard = Heard()
    engine(scripted, SCRIPTED_SPACE, strategy=ListStrategy([{"lr": lr} for lr in SCRIPTED]), n_trials=8,
           listener=heard, experiment=unique, study_name=unique, evaluate_test=False)
    for number in range(8):
        assert [kind for kind, n in heard.events if n == number] == ["running", "finished"], heard.events


def test_a_users_listener_hears_a_pools_trials_start_and_end(stores, unique, tmp_path):
    heard = Heard()
    hpo.search(scripted, SCRIPTED_SPACE, strategy=ListStrategy([{"lr": lr} for lr in SCRIPTED]), n_trials=8,
               driver=hpo.OptunaOptions(workers=2), listener=heard, experiment=unique, study_name=unique,
               home=tmp_path, evaluate_test=False, **stores)
    for number in range(8):
        assert [kind for kind, n in heard.events if n == number] == ["running", "finished"], heard.events


def test_every_trial_names_its_mlflow_run(engine, stores, unique):
    """Trials this quick end before MLflow's background writer has made their runs (it gathers
    writes for a moment): the end of the search names each one's run in the study."""
    result = engine(scripted, SCRIPTED_SPACE, strategy=ListStrategy([{"lr": lr} for lr in SCRIPTED]), n_trials=8,
                    experiment=unique, study_name=unique, evaluate_test=False)
    runs = {int(r.data.tags["hpo.trial_number"]): r.info.run_id
            for r in child_runs(stores["tracking_uri"], result.parent_run_id)}
    assert len(runs) == 8
    assert {t.number: t.run_id for t in result.trials} == runs
    assert {t.number: t.run_id for t in TrialStore(stores["storage"], unique).trials()} == runs


def test_ray_trials_that_run_long_are_judged_by_what_ended_meanwhile(request, stores, unique, tmp_path):
    """Trial 5 starts beside trial 4, with four trials complete: too few for the median rule
    then. Trial 4 reports while trial 5 runs, and trial 5 is judged against all five: the
    driver's loop decides, from every report it has seen."""
    request.getfixturevalue("ray_local")

    space = hpo.SearchSpace.model_validate(
        {"name": "late", "metric": "loss", "direction": "minimize", "fixed": {"epochs": 3},
         "params": {"lr": {"type": "float", "low": 0.0, "high": 5.0}}})
    result = hpo.search(late, space, driver=driver_options("ray"), pruner="median", n_trials=6,
                        strategy=ListStrategy([{"lr": float(lr)} for lr in range(6)]), experiment=unique,
                        study_name=unique, home=tmp_path, evaluate_test=False, **stores)
    assert [(t.state.value, t.detail) for t in result.trials] == [("complete", "")] * 5 + [
        ("pruned", "at epoch 2: 0.5 > median 0.4 of 5 trials")]


def test_setup_runs_once_per_process_and_every_trial_gets_its_context(engine, unique, tmp_path):
    log = tmp_path / "setup.log"
    space = digits_space(epochs=1, lr={"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": 6})
    result = engine(Warm(str(log)), space, strategy="grid", n_trials=6, experiment=unique, study_name=unique,
                    evaluate_test=False)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 6
    setups = log.read_text().split()
    assert 1 <= len(setups) <= 2 and len(set(setups)) == len(setups)  # once per process (Ray: per actor)


@pytest.mark.parametrize(("name", "where"), [("optuna", "cpu"), ("ray", "2 of 2 Ray actors")])
def test_a_long_setup_is_said_once_and_waited_for(request, stores, unique, tmp_path, monkeypatch, name, where):
    """A setup may rightly take long (a dataset downloaded); past a while, one line says so."""
    if name == "ray":
        request.getfixturevalue("ray_local")
    monkeypatch.setattr("hpo.loop._loop.SETUP_SAID_AFTER_S", 0.5)
    monkeypatch.setattr("hpo.drivers.ray._driver.SETUP_SAID_AFTER_S", 0.5)
    heard = Heard()
    result = hpo.prepare(SlowSetup(2.0), digits_space(epochs=1), strategy="random", n_trials=2,
                         driver=driver_options(name), home=tmp_path, experiment=unique, study_name=unique,
                         evaluate_test=False, **stores).run(heard)
    assert [t.value for t in result.trials] == [2.0, 2.0]
    assert [line for line in heard.notices if "setup" in line] == [
        f"the objective's setup has run for 0.5 s on {where}; waiting for it (Ctrl-C stops the search)"]


def test_a_failing_setup_stops_the_search_with_its_real_error(engine, stores, unique):
    with pytest.raises(hpo.HpoError, match=r"objective: its setup on cpu failed: FileNotFoundError: data/train\.npy"):
        engine(MissingData(), digits_space(epochs=1), strategy="grid", n_trials=3, experiment=unique,
               study_name=unique, evaluate_test=False)
    assert left_behind(stores, unique, unique) == []  # the setup runs before any trial is claimed


@pytest.mark.parametrize("pruner", ["median", "successive-halving", "hyperband"])
def test_no_pruner_restarts_a_trial_or_repeats_a_step(engine, stores, unique, pruner):
    space = hpo.SearchSpace.model_validate(
        {"name": "steady", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-6, "high": 1.0, "log": True}}})
    result = engine(steady, space, strategy="random", n_trials=10, pruner=pruner, experiment=unique,
                    study_name=unique)
    assert len(result.trials) == 10
    client = MlflowClient(stores["tracking_uri"])
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps == list(range(len(steps))), (run.data.tags["hpo.trial_number"], steps)  # its own step 0 too


def test_ray_retries_a_trial_whose_actor_died_in_the_same_run(request, stores, unique, tmp_path, monkeypatch):
    request.getfixturevalue("ray_local")
    monkeypatch.setenv("HPO_TEST_ID", unique)
    monkeypatch.setenv("HPO_TEST_MARKERS", str(tmp_path))
    import ray

    ray.shutdown()  # the actors must see the two variables: a fresh instance inherits them
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    result = hpo.search(killed_once, digits_space(epochs=1), driver=driver_options("ray"), strategy="grid",
                        n_trials=3, experiment=unique, study_name=unique, home=tmp_path, evaluate_test=False, **stores)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3  # the budget, in this run
    trials = TrialStore(stores["storage"], unique).trials()
    lost = [t for t in trials if t.reason == "worker lost"]
    assert len(lost) == 1 and len(trials) == 4
    retry = [t for t in result.trials if t.params == lost[0].params]
    assert len(retry) == 1
    runs = {r.data.tags["hpo.trial_number"]: r for r in child_runs(stores["tracking_uri"], result.parent_run_id)}
    assert runs[str(lost[0].number)].info.status == "FAILED"
    assert runs[str(retry[0].number)].data.tags["hpo.retry_of"] == str(lost[0].number)


def test_ray_starts_no_more_actors_than_the_budget_has_trials_left(request, stores, unique, tmp_path):
    """A study extended by one trial started an actor for every trial the cluster held at once."""
    request.getfixturevalue("ray_local")
    log = tmp_path / "setup.log"
    space = hpo.SearchSpace.model_validate({"name": "q", "metric": "loss", "direction": "minimize",
                                            "params": {"lr": {"type": "float", "low": 1e-3, "high": 0.1}}})
    options = dict(strategy="random", driver=driver_options("ray"), experiment=unique, study_name=unique,
                   home=tmp_path, evaluate_test=False, **stores)
    hpo.search(SetupLog(str(log)), space, n_trials=2, **options)
    assert len(log.read_text().split()) == 2  # two at once: the cluster has two CPUs
    hpo.search(SetupLog(str(log)), space, n_trials=3, **options)
    assert len(log.read_text().split()) == 3


def test_an_objective_a_ray_actor_cannot_load_is_refused_naming_why(request, stores, unique, tmp_path, monkeypatch):
    """An objective whose module the actors cannot import (a machine of the cluster without the
    user's file): the line said only that Ray's actor 'died because of an error raised in its
    creation task', with Ray's place for it, never the error; and the search is discarded."""
    request.getfixturevalue("ray_local")
    (tmp_path / "only_here.py").write_text("def scale():\n    return 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    only_here = __import__("only_here")

    def objective(params, trial):
        return params["lr"] * only_here.scale()

    monkeypatch.setattr("sys.path", [folder for folder in sys.path if folder != str(tmp_path)])  # not on the actors'
    with pytest.raises(hpo.HpoError) as refused:
        hpo.search(objective, digits_space(epochs=1), driver=driver_options("ray"), n_trials=2, experiment=unique,
                   study_name=unique, home=tmp_path, evaluate_test=False, **stores)
    assert str(refused.value) == ("objective: its setup ended the Ray actor it ran on (ModuleNotFoundError: No module "
                                  "named 'only_here')")
    assert left_behind(stores, unique, unique) == []


@pytest.mark.parametrize(("pruner", "sent"), [
    ("none", [[0, 1, 2, 3], [4], [5]]),
    (hpo.Pruning(pruner="median", warmup_steps=0), [[0], [1], [2], [3], [4], [5]]),
    (hpo.Pruning(pruner="successive-halving", warmup_steps=1), [[0, 1], [2, 3], [4], [5]]),  # rungs at 1, 3, 9
], ids=["none", "median", "successive-halving"])
def test_ray_sends_quick_reports_together_and_slow_ones_as_they_come(request, stores, unique, tmp_path,
                                                                     monkeypatch, pruner, sent):
    """Each exchange with an actor is a round trip: reports made within a second travel
    together, and one a second later goes within the second, so that MLflow's curves stay live;
    a report the pruner may stop the trial on is decided as it comes (past the median rule's
    warm-up, at successive halving's rungs), with the reports before it."""
    request.getfixturevalue("ray_local")
    from hpo.drivers.ray._driver import _Actors
    from hpo.drivers.ray._runner import Reported

    by_trial: dict[int, list[list[int]]] = {}
    heard = _Actors._heard

    def counted(self, slot, events):
        for number in {event.number for event in events if isinstance(event, Reported)}:
            by_trial.setdefault(number, []).append([e.step for e in events if isinstance(e, Reported) and
                                                    e.number == number])
        heard(self, slot, events)

    monkeypatch.setattr(_Actors, "_heard", counted)
    space = hpo.SearchSpace.model_validate(
        {"name": "quick", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}}})
    result = hpo.search(quick_then_slow, space, driver=driver_options("ray"), strategy="random", n_trials=2,
                        pruner=pruner, experiment=unique, study_name=unique, home=tmp_path, evaluate_test=False,
                        **stores)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 2
    assert list(by_trial.values()) == [sent] * 2
    client = MlflowClient(stores["tracking_uri"])
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        # its step 0 is not said to be the untrained model: it stays in the curve
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3, 4, 5]
        assert "initial_loss" not in run.data.metrics


FULL_SPACE = {  # the mission's full space, on the digits MLP, short
    "optimizer": {"type": "categorical", "choices": ["sgd_momentum", "adamw", "rmsprop"]},
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "condition": {"optimizer": ["sgd_momentum"]}},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "int", "low": 32, "high": 256, "log": True},
}


@pytest.mark.parametrize("engine", ["optuna", "ray"], indirect=True)  # the simulation runs one trial a worker
@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_a_space_that_searches_the_batch_size_and_optimizer_trains_in_populations(engine, stores, unique, strategy):
    """Members share their batch size (drawn once per population) and each keeps its own
    optimizer: a population holds several, and the rows of members pruned at the first rung are
    refilled from its group while the rest train on, in this process or in a Ray actor alike."""
    space = hpo.SearchSpace.model_validate({"name": "full", "metric": "val_loss", "direction": "minimize",
                                            "objective": "digits_mlp", "params": FULL_SPACE, "fixed": {"epochs": 3}})
    result = engine("digits_mlp", space, strategy=strategy, n_trials=20, population=6, experiment=unique,
                    study_name=unique, evaluate_test=False, pruner="successive-halving")
    assert len(result.trials) == 20 and all(t.state is not TrialState.FAILED for t in result.trials)
    groups: dict[str, list] = {}
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        # a last trial the budget had left for a population of one trains alone, untagged
        groups.setdefault(run.data.tags.get("hpo.population", run.info.run_id), []).append(run.data.params)
    assert len(groups) < 20 / 2  # populations, not trials one by one
    for members in groups.values():
        assert len({params["batch_size"] for params in members}) == 1
    assert max(len({params["optimizer"] for params in members}) for members in groups.values()) > 1
    assert max(len(members) for members in groups.values()) > 6  # a population's rows were refilled
