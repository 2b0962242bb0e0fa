"""The simulated driver: recorded curves replayed on virtual workers in simulated time, through
the real trial loop, store and MLflow, without training or sleeping."""

from __future__ import annotations

import json
import math

import pytest

import hpo
from conftest import ROOT, digits_space
from hpo import TrialState
from hpo.drivers.simulated import ReplayedCurves, SimulatedOptions, run_to_end

RECORDED = json.loads((ROOT / "tests" / "data" / "mnist1d_mlp_curves.json").read_text())

SPACE = hpo.SearchSpace.model_validate({
    "name": "replayed", "metric": "val_loss", "direction": "minimize",
    "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
               "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}},
})


def ten_steps(seconds: float = 10.0):
    """Ten steps of ``seconds`` each; the nearer lr is to 0.01, the lower the loss."""

    def objective(params, trial):
        distance = abs(math.log10(params["lr"]) + 2)
        for step in range(1, 11):
            yield seconds
            trial.report(step, val_loss=distance + 1.0 / step)
        return distance + 0.1

    return objective


def search(objective, stores, unique, workers=4, **options):
    return hpo.search(objective, SPACE, driver=SimulatedOptions(workers=workers), study_name=unique,
                      experiment=unique, evaluate_test=False, quiet=True, **stores, **options)


def test_virtual_workers_run_exactly_the_budget_each_trial_its_simulated_time(stores, unique):
    result = search(ten_steps(), stores, unique, strategy="random", n_trials=12)
    assert sorted(t.number for t in result.trials) == list(range(12))
    assert all(t.state is TrialState.COMPLETE and t.duration_s == pytest.approx(100.0) for t in result.trials)
    assert all([step for step, _ in t.curve] == list(range(1, 11)) for t in result.trials)


def test_a_timeout_counts_simulated_seconds_and_a_rerun_continues(stores, unique):
    """Four workers, trials of 100 simulated seconds: those started at 0, 100 and 200 s run, and
    none after 250 s; the same search without a timeout then runs the rest."""
    first = search(ten_steps(), stores, unique, strategy="random", n_trials=20, timeout=250)
    assert len(first.trials) == 12 and first.stopped.startswith("timeout: no trial started after 250 s")
    again = search(ten_steps(), stores, unique, strategy="random", n_trials=20)
    assert sorted(t.number for t in again.trials) == list(range(20))


@pytest.mark.parametrize("pruner", ["median", "successive-halving", "hyperband"])
def test_one_virtual_worker_prunes_as_the_optuna_driver(stores, unique, tmp_path, pruner):
    """The simulation is the loop itself: one trial at a time, it stops the same trials at the
    same steps as the Optuna driver running the same objective (the same study name: Hyperband
    draws its brackets from it)."""
    objective = ReplayedCurves(RECORDED["records"], "val_loss")
    simulated = search(objective, stores, unique, workers=1, strategy="random", n_trials=16, pruner=pruner,
                       warmup_trials=2)
    real = hpo.search(run_to_end(objective), SPACE, strategy="random", report=False, n_trials=16, pruner=pruner, warmup_trials=2,
                      driver=hpo.OptunaOptions(workers=1), study_name=unique, experiment=f"{unique}-real",
                      evaluate_test=False, quiet=True, home=tmp_path, tracking_uri=stores["tracking_uri"],
                      storage=f"sqlite:///{tmp_path / 'optuna.db'}")

    def endings(result):
        return [(t.number, t.state, t.curve[-1][0], t.value) for t in sorted(result.trials, key=lambda t: t.number)]

    assert endings(simulated) == endings(real)
    assert any(t.state is TrialState.PRUNED for t in simulated.trials)


def test_replayed_trials_report_their_recorded_curves_and_return_its_best_step(stores, unique):
    objective = ReplayedCurves(RECORDED["records"], "val_loss")
    result = search(objective, stores, unique, strategy="random", n_trials=8)
    for trial in result.trials:
        recorded = objective.nearest(trial.params)["steps"]
        assert trial.curve == [(step, metrics["val_loss"]) for step, _, metrics in recorded]
        assert trial.value == min(metrics["val_loss"] for _, _, metrics in recorded)
        assert trial.duration_s == pytest.approx(sum(seconds for _, seconds, _ in recorded))


def test_a_population_asked_of_the_simulation_is_said_to_be_one_trial_a_worker(stores, unique):
    class Notices(hpo.SearchListener):
        def __init__(self):
            self.said: list[str] = []

        def notice(self, text):
            self.said.append(text)

    heard = Notices()
    result = hpo.search("digits_mlp", digits_space(epochs=1), driver=SimulatedOptions(workers=2), strategy="random",
                        report=False, n_trials=2, population=4, listener=heard, study_name=unique, experiment=unique,
                        evaluate_test=False, quiet=True, **stores)
    assert len(result.trials) == 2
    assert heard.said == ["population none: the simulated driver runs one trial a virtual worker "
                          "(population 4 asked)"]
