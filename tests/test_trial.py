from __future__ import annotations

import math
import threading

import pytest

from conftest import StopAt
from hpo import Trial, TrialPruned, TrialState
from hpo.trial import DivergenceGuard, TrialRecord, ranking, run_objective, trial_seed


def test_report_calls_the_sink_then_the_pruner():
    seen, pruning = [], StopAt(99)
    trial = Trial(3, seed=1, metric="val_loss", on_report=lambda s, m: seen.append((s, m)), pruning=pruning)
    trial.report(0, val_loss=2.0, val_accuracy=0.1)
    trial.report(1, train_loss=1.0)  # no metric of the space: the pruner is not asked
    assert seen == [(0, {"val_loss": 2.0, "val_accuracy": 0.1}), (1, {"train_loss": 1.0})]
    assert pruning.seen == [(0, 2.0)]


def test_pruner_decision_ends_the_trial_with_its_reason():
    trial = Trial(0, seed=0, metric="val_loss", pruning=StopAt(2))
    trial.report(1, val_loss=1.0)
    with pytest.raises(TrialPruned) as pruned:
        trial.report(2, val_loss=1.0)
    assert pruned.value.reason == "median"


@pytest.mark.parametrize("bad", [math.nan, math.inf, 25.0])
def test_divergence_guard_stops_nan_inf_and_exploding_loss(bad):
    trial = Trial(0, seed=0, metric="val_loss", guard=DivergenceGuard(factor=10))
    trial.report(0, train_loss=2.3)
    with pytest.raises(TrialPruned, match="diverged"):
        trial.report(1, train_loss=bad)


def test_divergence_guard_lets_an_overfitting_loss_rise_modestly():
    guard = DivergenceGuard(factor=10)
    assert not any(guard.diverged({"val_loss": v}) for v in (2.3, 0.8, 1.5, 3.0))


def test_divergence_guard_validates_its_factor():
    with pytest.raises(ValueError, match="factor=1"):
        DivergenceGuard(factor=1)


def _trial(guard=True):
    return Trial(0, seed=0, metric="loss", guard=DivergenceGuard() if guard else None)


@pytest.mark.parametrize(
    ("objective", "state", "reason"),
    [
        (lambda p, t: 0.5, TrialState.COMPLETE, ""),
        (lambda p, t: {"loss": 0.5, "accuracy": 0.9}, TrialState.COMPLETE, ""),
        (lambda p, t: {"accuracy": 0.9}, TrialState.FAILED, "objective returned no 'loss'"),
        (lambda p, t: 1 / 0, TrialState.FAILED, "ZeroDivisionError: division by zero"),
        (lambda p, t: "high", TrialState.FAILED, "objective returned a non-number: 'high'"),
        (lambda p, t: {"loss": 0.5, "lock": threading.Lock()}, TrialState.FAILED,  # every trial's reason alike
         "objective returned a non-number: 'lock': <_thread.lock>"),
        (lambda p, t: math.nan, TrialState.PRUNED, "diverged"),
    ],
)
def test_run_objective_turns_every_ending_into_an_outcome(objective, state, reason):
    outcome = run_objective(objective, {}, _trial(), "loss")
    assert (outcome.state, outcome.reason) == (state, reason)


def test_nan_without_the_guard_is_a_failure():
    assert run_objective(lambda p, t: math.nan, {}, _trial(guard=False), "loss").reason == "non-finite loss"


def test_out_of_memory_is_named_cuda_oom():
    class OutOfMemoryError(RuntimeError):  # the name torch.cuda gives it
        pass

    def objective(params, trial):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert run_objective(objective, {}, _trial(), "loss").reason == "cuda_oom"


def test_pruned_outcome_keeps_the_last_reported_value():
    def objective(params, trial):
        trial.report(0, loss=3.0)
        raise TrialPruned("median")

    outcome = run_objective(objective, {}, _trial(), "loss")
    assert (outcome.state, outcome.value, outcome.reason) == (TrialState.PRUNED, 3.0, "median")


def test_trial_seeds_differ_per_trial_and_are_stable():
    assert trial_seed(0, 1) != trial_seed(0, 2)
    assert trial_seed(5, 1) == trial_seed(5, 1)


def test_a_lost_configuration_is_retried_a_bounded_number_of_times():
    from hpo import TrialRecord
    from hpo.store import MAX_RETRIES, in_budget

    lost = [TrialRecord(n, {"lr": 0.1}, TrialState.FAILED, reason="worker lost") for n in range(MAX_RETRIES + 1)]
    done = TrialRecord(9, {"lr": 0.2}, TrialState.COMPLETE, 1.0)
    stopped = TrialRecord(10, {"lr": 0.3}, TrialState.FAILED, reason="interrupted")
    kept = in_budget([done, *lost, stopped])
    # The last loss of lr=0.1 stands as its failure; earlier losses and Ctrl-C make way for a retry.
    assert [t.number for t in kept] == [MAX_RETRIES, 9]


def test_one_ranking_orders_every_leaderboard_and_names_the_best():
    """Pruned trials rank at their best value among the complete ones, failed and valueless
    trials last, ties by number, either direction; the best trial is the first complete one,
    and the terminal's leaderboard and the report's agree with it."""
    from hpo import SearchResult, SearchSpace
    from hpo.reporting import ranked
    from hpo.reporting._terminal import leaderboard

    trials = [TrialRecord(0, {}, TrialState.COMPLETE, 0.5), TrialRecord(1, {}, TrialState.PRUNED, 0.2),
              TrialRecord(2, {}, TrialState.FAILED, 0.1), TrialRecord(3, {}, TrialState.COMPLETE, 0.5),
              TrialRecord(4, {}, TrialState.RUNNING, 0.0), TrialRecord(5, {}, TrialState.COMPLETE, 0.3),
              TrialRecord(6, {}, TrialState.PRUNED, None)]
    assert [t.number for t in ranking(trials, 1)] == [1, 5, 0, 3, 2, 6]
    assert [t.number for t in ranking(trials, -1)] == [0, 3, 5, 1, 2, 6]
    for direction in ("minimize", "maximize"):
        space = SearchSpace.model_validate({"name": "s", "metric": "val_loss", "direction": direction,
                                            "params": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}})
        result = SearchResult(space, trials, "s")
        complete = [row.record.number for row in ranked(trials, direction) if row.record.state is TrialState.COMPLETE]
        assert [row.number for row in leaderboard(result)] == complete
        assert result.best.number == complete[0] == (5 if direction == "minimize" else 0)
        assert repr(result) == (f"<SearchResult 's': 7 trials (3 complete, 2 pruned, 1 failed); best trial "
                                f"{result.best.number}: val_loss {result.best.value}, {{}}>")
    assert repr(SearchResult(space, [], "s")) == "<SearchResult 's': 0 trials (0 complete, 0 pruned, 0 failed); no best trial>"
    assert result.best_trial is result.best  # Optuna's name for it


def test_a_trial_record_prints_without_its_curve_and_traceback():
    record = TrialRecord(3, {"lr": 0.1}, TrialState.FAILED, curve=[(step, 1.0) for step in range(40)],
                         traceback="Traceback (most recent call last):\n  ...")
    assert "curve" not in repr(record) and "Traceback" not in repr(record)
    assert repr(record).startswith("TrialRecord(number=3, params={'lr': 0.1}, state=<TrialState.FAILED")


def test_a_results_trials_make_a_dataframe_as_an_optuna_studys_do():
    """Optuna users reach for ``study.trials_dataframe()``: the same columns, params_ and all, a
    row per trial, a parameter a condition left out empty."""
    from hpo import SearchResult, SearchSpace

    space = SearchSpace.model_validate({"name": "s", "metric": "val_loss", "direction": "minimize", "params": {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "momentum": {"type": "float", "low": 0.5, "high": 0.99, "condition": {"optimizer": ["sgd"]}}}})
    trials = [TrialRecord(0, {"optimizer": "sgd", "momentum": 0.9}, TrialState.COMPLETE, 0.5,
                          metrics={"val_loss": 0.5, "val_accuracy": 0.8}, duration_s=1.5, run_id="r0"),
              TrialRecord(1, {"optimizer": "adam"}, TrialState.PRUNED, 0.7, reason="median", metrics={"val_loss": 0.7})]
    frame = SearchResult(space, trials, "s").trials_dataframe()
    assert list(frame.columns) == ["number", "value", "state", "duration", "params_momentum", "params_optimizer",
                                   "metrics_val_accuracy", "metrics_val_loss", "stage", "reason", "run_id"]
    assert frame["state"].tolist() == ["complete", "pruned"] and frame["value"].tolist() == [0.5, 0.7]
    assert frame["params_optimizer"].tolist() == ["sgd", "adam"] and frame["params_momentum"].isna().tolist() == [False, True]
    assert frame["duration"][0].total_seconds() == 1.5 and frame["run_id"][0] == "r0"
    assert frame.loc[frame["value"].idxmin(), "number"] == 0
    assert list(SearchResult(space, [], "s").trials_dataframe().columns) == ["number", "value", "state", "duration",
                                                                           "stage", "reason", "run_id"]
