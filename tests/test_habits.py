"""What an Optuna user brings along: Optuna's trial calls, a search-wide time budget, and studies
that are resumed only as they ran."""

from __future__ import annotations

import re
import time
import warnings

import numpy as np
import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient

import hpo
from conftest import StopAt, child_runs, digits_space
from hpo import HpoError, Trial, TrialPruned, TrialState
from hpo.trial import run_objective

SPACE = hpo.SearchSpace.model_validate({
    "name": "habits", "metric": "loss", "direction": "minimize",
    "params": {"lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}},
    "fixed": {"epochs": 6},
})


@pytest.fixture(scope="module", autouse=True)
def _ray_shut_down_after():
    """The Ray driver's tests here start a local instance in this process: it ends with them."""
    yield
    import sys

    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()


def _search(objective, unique, stores, **options):
    options = {"strategy": "random", "n_trials": 4, "study_name": unique, "experiment": unique,
               "evaluate_test": False, "population": 1, "report": False, **options}
    return hpo.search(objective, SPACE, **stores, **options)


def _lr(params, trial):
    return params["lr"]


def _optuna_style():
    """An objective ported from Optuna's examples: report(value, step), should_prune, TrialPruned
    (made here, so that Ray's actors get it by value)."""

    def objective(params, trial):
        loss = 1.0
        for epoch in range(params["epochs"]):
            loss = params["lr"] + 1.0 / (epoch + 1)
            trial.report(loss, epoch)
            if trial.should_prune():
                raise hpo.TrialPruned()
        return loss

    return objective


def test_optuna_order_reports_wait_for_should_prune():
    trial = Trial(0, seed=0, metric="loss", pruning=StopAt(2, detail="x"))
    trial.report(0.5, 1)
    assert not trial.should_prune()
    trial.report(0.4, 2)  # Optuna's order does not raise: the objective asks
    assert trial.should_prune()
    assert trial.history == [(1, {"loss": 0.5}), (2, {"loss": 0.4})]
    outcome = run_objective(lambda p, t: (t.report(0.3, 3), t.should_prune() and (_ for _ in ()).throw(TrialPruned())),
                            {}, trial, "loss")
    assert (outcome.state, outcome.reason, outcome.detail) == (TrialState.PRUNED, "median", "x")


def test_hpo_order_reports_still_raise_when_pruned():
    trial = Trial(0, seed=0, metric="loss", pruning=StopAt(2))
    trial.report(1, loss=0.5)
    with pytest.raises(TrialPruned):
        trial.report(2, loss=0.4)


@pytest.mark.parametrize("call", [
    lambda t: t.report(1, 0.53),          # hpo's step first, the value without its name
    lambda t: t.report(0.5, 1, loss=2.0),
    lambda t: t.report(),
    lambda t: t.report(0.5, loss=2.0),   # a step that is no epoch
    lambda t: t.report(-1, loss=2.0),    # taken before, as Optuna's report refuses it
    lambda t: t.report(2.0, -1),
])
def test_a_report_in_neither_order_says_the_right_calls(call):
    with pytest.raises(TypeError, match=r"trial\.report\(step, loss=value\).*trial\.report\(value, step\)"):
        call(Trial(0, seed=0, metric="loss"))


def test_a_tensor_metric_is_taken_as_its_number_without_pytorchs_warning():
    """``trial.report(epoch, val_loss=total / n)`` where ``total`` summed losses that still hold
    their graph: the value is the number, and PyTorch's grad warning no longer names hpo's line."""
    loss = torch.tensor(0.25, requires_grad=True) * 2
    trial = Trial(0, seed=0, metric="loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trial.report(0, loss=loss)
        outcome = run_objective(lambda p, t: loss, {}, trial, "loss")
    assert trial.history == [(0, {"loss": 0.5})] and (outcome.state, outcome.value) == (TrialState.COMPLETE, 0.5)


@pytest.mark.parametrize(("value", "shown"), [(torch.tensor([0.5, 0.6]), "<Tensor of shape (2,)>"),
                                              (np.zeros((3, 2)), "<ndarray of shape (3, 2)>"), (None, "None")])
def test_a_metric_that_is_not_one_number_is_named_in_the_report_call(value, shown):
    """It was the conversion's own error (``only one element tensors can be converted...``),
    naming neither the call nor the metric."""
    with pytest.raises(TypeError, match=rf"^trial\.report\(0, val_loss={re.escape(shown)}\): val_loss is not one number; "):
        Trial(0, seed=0, metric="val_loss").report(0, val_loss=value)
    outcome = run_objective(lambda p, t: value, {}, Trial(0, seed=0, metric="val_loss"), "val_loss")
    assert outcome.reason == f"objective returned a non-number: {shown}"


def test_ray_trains_report_fails_the_trial_saying_what_takes_its_place():
    """``ray.train.report`` (Tune's report in Ray's newer examples) raises outside Ray Train's
    trainers, in Ray's words only; the search went on to three failures before it stopped."""
    import ray.train

    from hpo._search import EVERY_TRIAL_WOULD

    def objective(params, trial):
        ray.train.report({"loss": 0.5})
        return 0.5

    outcome = run_objective(objective, {}, Trial(0, seed=0, metric="loss"), "loss")
    assert outcome.reason == ("ray.train.report(...) is Ray Train's: it runs only under Ray Train's trainer.fit(), "
                              "not where hpo runs trials; report with trial.report(step, loss=value)")
    assert outcome.where.startswith("tests/test_habits.py:") and outcome.reason.startswith(EVERY_TRIAL_WOULD)


def test_optunas_own_trial_pruned_is_recorded_as_pruned():
    def objective(params, trial):
        trial.report(1, loss=0.5)
        raise optuna.TrialPruned("plateau")

    outcome = run_objective(objective, {}, Trial(0, seed=0, metric="loss"), "loss")
    assert (outcome.state, outcome.reason, outcome.detail, outcome.value) == (
        TrialState.PRUNED, "objective", "plateau", 0.5)


@pytest.mark.parametrize("driver", ["optuna", "ray"])
def test_an_optuna_objective_is_pruned_by_the_median_rule(driver, unique, stores):
    pruning = hpo.Pruning(pruner="median", warmup_trials=1, warmup_steps=1)
    options = {} if driver == "optuna" else {"driver": hpo.RayOptions(max_concurrent=1)}
    result = _search(_optuna_style(), unique, stores, pruner=pruning, n_trials=5, **options)
    pruned = [t for t in result.trials if t.state is TrialState.PRUNED]
    assert pruned and all(t.reason == "median" and "median" in t.detail for t in pruned)
    assert not [t for t in result.trials if t.state is TrialState.FAILED]


def test_the_result_answers_what_an_optuna_user_reads_on_a_study_after_optimize(unique, stores):
    """``study.direction``, ``get_trials(states=...)``, a trial's ``intermediate_values`` and
    ``duration`` were AttributeErrors, ``trials_dataframe(attrs=...)`` a TypeError; ``user_attrs``
    one with no word of where hpo keeps them."""
    pruning = hpo.Pruning(pruner="median", warmup_trials=1, warmup_steps=1)
    result = _search(_optuna_style(), unique, stores, pruner=pruning, n_trials=5)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    assert result.direction == study.direction.name.lower() == "minimize"
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        ours = result.get_trials(deepcopy=False, states=(state,))
        assert [t.number for t in ours] == [t.number for t in study.get_trials(states=(state,))] != []
        assert [t.intermediate_values for t in ours] == [t.intermediate_values for t in study.get_trials(states=(state,))]
    assert result.get_trials(states=[TrialState.PRUNED]) == result.get_trials(states=[optuna.trial.TrialState.PRUNED])
    assert result.get_trials() == result.trials
    attrs = ("number", "value", "params")
    ours, theirs = result.trials_dataframe(attrs=attrs), study.trials_dataframe(attrs=attrs)
    assert list(ours.columns) == ["number", "value", "params_lr"] and (ours.to_numpy() == theirs.to_numpy()).all()
    with pytest.raises(ValueError, match=r"^attrs: no column 'user_attrs' here \(the columns: number, value, "):
        result.trials_dataframe(attrs=("number", "user_attrs"))
    assert all(abs(t.duration.total_seconds() - t.duration_s) < 1e-6 and t.duration_s > 0 for t in result.trials)
    with pytest.raises(ValueError, match=r"states: .*WAITING.* is not a trial state of a finished search"):
        result.get_trials(states=[optuna.trial.TrialState.WAITING])
    with pytest.raises(AttributeError, match=r"^trial.user_attrs is Optuna's: .* are in trial.metrics$"):
        result.best_trial.user_attrs  # noqa: B018
    assert not hasattr(result.best_trial, "anything_else")


def _each_step_twice(optuna_order: bool):
    """Reports each step twice, as an objective reporting per batch under its epoch does."""

    def objective(params, trial):
        for epoch in range(3):
            for batch in range(2):
                loss = params["lr"] + 1.0 / (epoch + 1) + batch
                trial.report(loss, epoch) if optuna_order else trial.report(epoch, loss=loss)
        return loss

    return objective


@pytest.mark.parametrize("driver", ["optuna", "ray"])
@pytest.mark.parametrize("optuna_order", [True, False], ids=["optuna-order", "hpo-order"])
def test_a_step_reported_twice_keeps_its_first_value_as_optuna_does(optuna_order, driver, unique, stores):
    """The second report of a step broke the study's write with the database's traceback
    (``UNIQUE constraint failed: trial_intermediate_values``) and the search with it."""
    options = {} if driver == "optuna" else {"driver": hpo.RayOptions(max_concurrent=1)}
    result = _search(_each_step_twice(optuna_order), unique, stores, n_trials=2,
                     pruner=hpo.Pruning(pruner="median", warmup_trials=1, warmup_steps=1), **options)
    assert result.trials[0].state is TrialState.COMPLETE  # the second may be pruned (hpo's order raises)
    assert not [t for t in result.trials if t.state is TrialState.FAILED]
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    for trial, record in zip(study.trials, result.trials, strict=True):
        reached = 3 if record.state is TrialState.COMPLETE else 2
        firsts = {epoch: record.params["lr"] + 1.0 / (epoch + 1) for epoch in range(reached)}
        assert trial.intermediate_values == firsts
        assert record.curve == list(firsts.items())


@pytest.mark.parametrize("population", [1, 4])
def test_the_study_holds_each_trials_curve_without_a_pruner_too(population, unique, stores):
    """Optuna's tools (optuna-dashboard's learning curves, ``trial.intermediate_values``) read the
    curves from the study; they were written only where a pruner read them."""
    result = hpo.search("digits_mlp", digits_space(epochs=3), strategy="grid", n_trials=3, population=population,
                        study_name=unique, experiment=unique, evaluate_test=False, quiet=True, **stores)
    assert all(t.state is TrialState.COMPLETE for t in result.trials)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    curves = {t.number: t.intermediate_values for t in study.trials}
    assert curves == {t.number: dict(t.curve) for t in result.trials}
    assert all(sorted(curve) == [0, 1, 2, 3] for curve in curves.values())


@pytest.mark.parametrize(("driver", "seconds", "timeout", "budget"), [("optuna", 0.6, 3.0, 20), ("ray", 2.0, 30.0, 40)])
def test_a_search_wide_timeout_starts_no_trial_after_it_and_a_rerun_continues(driver, seconds, timeout, budget, unique,
                                                                              stores):
    """Ray's start counts against the timeout: 30 s, where a local Ray instance took more than 15 s
    to start beside the suite's other workers on a 2-core AMD EPYC; two actors then run at most
    30 of the 40 trials."""
    def slow(params, trial):
        time.sleep(seconds)
        return params["lr"]

    options = {"driver": "ray"} if driver == "ray" else {}
    result = _search(slow, unique, stores, n_trials=budget, timeout=timeout, **options)
    assert 1 <= len(result.trials) < budget
    assert result.stopped.startswith("timeout: no trial started after ")
    store = hpo.prepare(slow, SPACE, strategy="random", study_name=unique, **stores).store
    assert store.study.user_attrs["hpo.ended"] == result.stopped
    assert MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id).data.tags["hpo.ended"] == result.stopped
    again = _search(slow, unique, stores, n_trials=len(result.trials) + 2, **options)
    assert len(again.trials) == len(result.trials) + 2 and not again.stopped
    assert store.study.user_attrs["hpo.ended"] == ""


def test_a_fresh_study_stopped_by_its_timeout_says_which_study_continues(unique, stores):
    """Under new_study the same call starts yet another study: 'run the search again' did not continue it."""
    def slow(params, trial):
        time.sleep(0.6)
        return params["lr"]

    _search(slow, unique, stores, n_trials=1)
    result = _search(slow, unique, stores, n_trials=20, timeout=1.0, new_study=True)
    assert result.study_name == f"{unique}-2"
    assert result.stopped.endswith(f"trials done; run the search again on study '{unique}-2' (study_name, --study; "
                                   "not new_study, which starts another) to continue")
    again = _search(slow, unique, stores, n_trials=len(result.trials) + 1, study_name=f"{unique}-2")
    assert len(again.trials) == len(result.trials) + 1


@pytest.mark.parametrize(("change", "said"), [
    ({"driver": "ray"}, "driver: study '{name}' ran with optuna, not ray"),
    ({"strategy": "tpe"}, "strategy: study '{name}' ran with random, not tpe"),
    ({"pruner": "median"}, "pruner: study '{name}' ran with none, not median"),
    ({"seed": 3}, "seed: study '{name}' ran with 0, not 3"),
])
def test_a_rerun_that_differs_from_the_study_is_refused_naming_the_difference(change, said, unique, stores):
    _search(_lr, unique, stores, n_trials=2)
    with pytest.raises(HpoError) as refused:
        _search(_lr, unique, stores, n_trials=3, **change)
    assert str(refused.value).startswith(said.format(name=unique))
    assert "--new-study" in str(refused.value)


@pytest.mark.parametrize(("given", "said"), [
    ({"strategy": optuna.samplers.TPESampler(seed=1)}, "strategy: hpo runs its own strategies, alike on every "
     "driver, not Optuna's TPESampler: pass strategy='tpe' (seeded by seed=...)"),
    ({"strategy": optuna.samplers.GPSampler(seed=1)}, "strategy: hpo runs its own strategies, alike on every "
     "driver, not Optuna's GPSampler: pass strategy='gp' (seeded by seed=...)"),
    ({"strategy": optuna.samplers.NSGAIISampler()}, "strategy: hpo runs its own strategies, alike on every driver, "
     "not Optuna's NSGAIISampler: pass one of auto, grid, random, coarse-to-fine, tpe, gp, or an hpo strategy (a "
     "subclass of hpo.strategies.BaseStrategy)"),
    ({"pruner": optuna.pruners.MedianPruner(n_warmup_steps=2)}, "pruner: hpo runs its own pruners, alike on every "
     "driver, not Optuna's MedianPruner: pass pruner='median', or hpo.Pruning(pruner='median', warmup_steps=..., "
     "warmup_trials=...) for its warm-up"),
    ({"pruner": optuna.pruners.NopPruner()}, "pruner: hpo runs its own pruners, alike on every driver, not "
     "Optuna's NopPruner: pass pruner='none'"),
    ({"pruner": None}, "pruner: takes a name (none, median, successive-halving, hyperband) or hpo.Pruning, got None"),
    ({"driver": optuna.storages.InMemoryStorage()}, "driver: takes a name (optuna, ray) or hpo.OptunaOptions or "
     "hpo.RayOptions, got InMemoryStorage"),
], ids=["tpe-sampler", "gp-sampler", "other-sampler", "median-pruner", "nop-pruner", "none", "storage-as-driver"])
def test_optunas_own_samplers_and_pruners_are_answered_with_hpos_in_one_line(given, said, tmp_path):
    """Before, each was refused as ``Input should be a valid string``."""
    with pytest.raises(HpoError) as refused:
        hpo.search(_lr, SPACE, home=tmp_path, n_trials=2, **given)
    assert str(refused.value) == said
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(("given", "said"), [
    ({"sampler": optuna.samplers.TPESampler()}, "hpo plans trials with strategy= (auto, grid, random, "
     "coarse-to-fine, tpe, gp)"),
    ({"direction": "maximize"}, "the space names its metric and direction (`direction: maximize` in its file)"),
    ({"metric": "accuracy"}, "the space names its metric and direction (`metric: val_loss` in its file)"),
    ({"n_jobs": 4}, "trials run at once on the driver's workers: driver=hpo.OptunaOptions(workers=N)"),
    ({"load_if_exists": True}, "hpo.search resumes its study whenever it exists (new_study=True starts another)"),
    ({"num_samples": 20}, "the budget is n_trials= (--trials)"),  # Ray Tune's, below
    ({"mode": "min"}, "the space names its metric and direction (`direction: minimize` in its file)"),
    ({"scheduler": object()}, "hpo stops trials with pruner= (median, successive-halving, hyperband), alike on "
                              "every driver"),
    ({"resources_per_trial": {"gpu": 1}}, "driver=hpo.RayOptions(cpus_per_trial=..., gpus_per_trial=...)"),
    ({"max_concurrent_trials": 4}, "driver=hpo.RayOptions(max_concurrent=N)"),
    ({"time_budget_s": 600}, "timeout= bounds the search's time (seconds, or '2h'): no trial starts after it"),
    ({"param_space": {"lr": 0.1}}, "the space is hpo.search's second argument: a space file's path, or its mapping"),
])
def test_optunas_and_ray_tunes_own_arguments_are_answered_with_what_takes_their_place(given, said, tmp_path):
    """Before, each was refused as an unexpected keyword argument, and nothing more (Ray Tune's
    ``time_budget_s`` with ``did you mean 'timeout'?``)."""
    with pytest.raises(HpoError) as refused:
        hpo.search(_lr, SPACE, home=tmp_path, n_trials=2, **given)
    assert str(refused.value) == f"unexpected keyword argument {next(iter(given))!r}: {said}"
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(("given", "said"), [
    ({"n_trials": None, "timeout": 600}, "n_trials: must be a number of trials, got None: Optuna's n_trials=None runs "
     "until its timeout, hpo's budget is trials (timeout= bounds its time too)"),
    ({"seed": None}, "seed: must be a whole number, got None: hpo seeds every search, so that the same seed gives the "
     "same trials"),
])
def test_optunas_none_for_the_budget_or_the_seed_is_answered_in_hpos_terms(given, said, tmp_path):
    """Before, pydantic's ``Input should be a valid integer``."""
    with pytest.raises(HpoError) as refused:
        hpo.search(_lr, SPACE, home=tmp_path, **({"n_trials": 2} | given))
    assert str(refused.value) == said
    assert not list(tmp_path.iterdir())


def _suggests(params, trial):
    """An Optuna objective's body, brought along: its parameters asked of the trial."""
    lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
    width = trial.suggest_int("width", 16, 256, step=16)
    return lr * trial.suggest_categorical("optimizer", ["adam", "sgd"]).count("a") / width


def test_optunas_suggest_calls_stop_the_search_at_the_first_trial_with_the_space_entry_to_write(tmp_path, unique):
    """Before, each trial failed with ``'Trial' object has no attribute 'suggest_float'`` and the
    search stopped after three."""
    with pytest.raises(HpoError) as refused:
        hpo.search(_suggests, SPACE, home=tmp_path, n_trials=4, study_name=unique, quiet=True)
    assert str(refused.value).endswith(
        "AttributeError: trial.suggest_float('lr', ...) is Optuna's: hpo draws each trial's parameters from the "
        "space, so read params['lr'] (its entry in the space file: lr: {type: float, low: 0.001, high: 1.0, log: "
        "true}) (the first trial failed so; the search stops)")  # the space has lr: no more to add
    store = hpo.prepare(_suggests, SPACE, home=tmp_path, study_name=unique).store
    assert len(store.trials()) == 1

    def suggests_width(params, trial):
        return trial.suggest_int("width", 16, 256, step=16)

    with pytest.raises(HpoError, match=r"params\['width'\] \(its entry in the space file: width: \{type: int, "
                                       r"low: 16, high: 256, step: 16\}\) — the space has no 'width': add that "
                                       r"entry to it \(the first trial failed so"):
        hpo.search(suggests_width, SPACE, home=tmp_path, n_trials=4, study_name=unique + "w", quiet=True)


@pytest.mark.parametrize(("call", "entry"), [
    (lambda t: t.suggest_float("wd", 1e-5, 0.1, log=True), "wd: {type: float, low: 1.0e-05, high: 0.1, log: true}"),
    (lambda t: t.suggest_loguniform("wd", 1e-5, 0.1), "wd: {type: float, low: 1.0e-05, high: 0.1, log: true}"),
    (lambda t: t.suggest_discrete_uniform("p", 0.0, 0.5, 0.1), "p: {type: float, low: 0.0, high: 0.5, step: 0.1}"),
    (lambda t: t.suggest_categorical("opt", ["adam", "sgd"]), "opt: {type: categorical, choices: ['adam', 'sgd']}"),
], ids=["float", "loguniform", "discrete", "categorical"])
def test_a_suggest_call_writes_the_space_entry_that_yaml_reads_back_as_asked(call, entry):
    with pytest.raises(AttributeError, match=r"its entry in the space file: (.*)\)$") as raised:
        call(Trial(0, seed=0, metric="loss"))
    written = str(raised.value).rsplit("its entry in the space file: ", 1)[1][:-1]
    assert written == entry
    name, spec = next(iter(yaml.safe_load(written).items()))
    hpo.SearchSpace.model_validate({"name": "s", "metric": "loss", "direction": "minimize", "params": {name: spec}})


def _sets_a_user_attr(params, trial):
    trial.set_user_attr("epochs_run", 12)
    return params["lr"]


def test_optunas_trial_attributes_stop_the_search_at_the_first_trial_saying_where_hpo_has_them(tmp_path, unique):
    """``trial.set_user_attr``, ``trial.params``, ``trial.study``: each trial failed with ``'Trial'
    object has no attribute 'set_user_attr'``, three of them before the search stopped."""
    with pytest.raises(HpoError) as refused:
        hpo.search(_sets_a_user_attr, SPACE, home=tmp_path, n_trials=4, study_name=unique, quiet=True)
    assert str(refused.value).endswith(
        "AttributeError: trial.set_user_attr is Optuna's: hpo keeps the numbers an objective returns beside its "
        "metric (return {'val_loss': loss, 'epochs': 12}), in the study and on the trial's MLflow run (the first "
        "trial failed so; the search stops)")
    assert len(hpo.prepare(_sets_a_user_attr, SPACE, home=tmp_path, study_name=unique).store.trials()) == 1
    with pytest.raises(AttributeError, match=r"^trial\.params is Optuna's: hpo passes them first, as "
                                             r"objective\(params, trial\)$"):
        Trial(0, seed=0).params  # noqa: B018
    assert getattr(Trial(0, seed=0), "study", None) is None  # still an AttributeError, for getattr and hasattr


def test_an_optuna_objective_of_the_trial_alone_is_told_where_parameters_come_from(tmp_path):
    def objective(trial):
        return trial.suggest_float("lr", 1e-3, 1.0)

    with pytest.raises(HpoError) as refused:
        hpo.search(objective, SPACE, home=tmp_path, n_trials=2)
    assert str(refused.value).startswith("objective: ")
    assert str(refused.value).endswith(".objective(trial) cannot be called as objective(params, trial): hpo passes "
                                       "each trial's parameters first, from the space file")


def test_a_class_of_objectives_is_told_to_pass_one_of_its_objects(tmp_path):
    """As Ray Tune takes a Trainable class: hpo takes an object, and says so rather than only
    that ``Objective()`` cannot be called as ``objective(params, trial)``."""

    class Objective:
        def __call__(self, params, trial):
            return params["lr"]

    with pytest.raises(HpoError) as refused:
        hpo.search(Objective, SPACE, home=tmp_path, n_trials=2)
    assert str(refused.value).endswith(".Objective() cannot be called as objective(params, trial): it is a class; "
                                       "pass an object of it, Objective()")
    assert not tmp_path.joinpath("optuna.db").exists()


def test_a_budget_below_what_is_done_runs_nothing_and_a_larger_one_is_said(unique, stores):
    first = _search(_lr, unique, stores, n_trials=4)
    with pytest.raises(HpoError, match=r"n_trials: study '\w+' has 4 trials done, more than 2: nothing to run"):
        _search(_lr, unique, stores, n_trials=2)
    assert len(child_runs(stores["tracking_uri"], first.parent_run_id)) == 4

    said = []

    class Notices(hpo.SearchListener):
        def notice(self, text):
            said.append(text)

    _search(_lr, unique, stores, n_trials=5, listener=Notices())
    assert f"Study {unique!r}: its budget goes from 4 to 5 trials" in said


@pytest.mark.parametrize(("flag", "field"), [("--direction", "direction: maximize"), ("--metric", "metric: val_loss")])
def test_the_cli_answers_a_flag_for_what_the_space_says_with_where_it_goes(flag, field, tmp_path):
    """Before: ``No such option '--metric'. Did you mean '--trials'?``"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hpo.cli", "search", "lr_wd", flag, "x"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"hpo: error: {flag}: not a flag: the space names its metric and direction "
                                   f"(`{field}` in its file)")
    assert not (tmp_path / ".hpo").exists()


def test_the_cli_refuses_a_timeout_that_is_not_positive(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hpo.cli", "search", "lr_wd", "--timeout", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "hpo: error: --timeout: must be more than 0 seconds, got 0.0"
    assert not (tmp_path / ".hpo").exists()


def test_mlflow_holds_the_exact_values_each_trial_ran_and_its_study(unique, stores):
    from hpo.reporting._terminal import mlflow_pointer

    result = _search(_lr, unique, stores, n_trials=3)
    trials = {t.number: t for t in result.trials}
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        trial = trials[int(run.data.tags["hpo.trial_number"])]
        assert float(run.data.params["lr"]) == trial.params["lr"]  # not rounded to 4 digits
        assert run.data.tags["hpo.study"] == unique
    assert result.best_params == result.best.params and set(result.best_params) == {"lr"}
    assert result.fixed == {"epochs": 6} and result.best_config == {"epochs": 6, **result.best_params}
    assert f"MLflow: experiment {unique!r} (id {result.experiment_id})" in mlflow_pointer(result)


def test_read_params_notes_what_an_objective_reads():
    import json

    from hpo.trial import ReadParams

    params = ReadParams({"lr": 0.1, "momentum": 0.9, "epochs": 3})
    assert params["lr"] == 0.1 and params.get("epochs") == 3 and "momentum" in params
    assert params.unread() == ["momentum"]
    assert isinstance(params, dict) and json.loads(json.dumps(params)) == {"lr": 0.1, "momentum": 0.9, "epochs": 3}
    assert params.unread() == []  # serialising reads everything
    unpacked = ReadParams({"lr": 0.1, "momentum": 0.9})
    assert {**unpacked} == {"lr": 0.1, "momentum": 0.9} and unpacked.unread() == []


class Notices(hpo.SearchListener):
    def __init__(self):
        self.said = []

    def notice(self, text):
        self.said.append(text)


@pytest.mark.parametrize("population", [1, 2])
def test_a_searched_parameter_the_objective_never_reads_is_warned_of(population, unique, stores):
    from conftest import digits_space

    space = digits_space(epochs=1, lr={"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                         momentum={"type": "float", "low": 0.5, "high": 0.99})
    space = space.model_copy(update={"fixed": {**space.fixed, "optimizer": "adam"}})
    notices = Notices()
    result = hpo.search("digits_mlp", space, strategy="random", n_trials=2, population=population,
                        study_name=unique, experiment=unique, evaluate_test=False, listener=notices, **stores)
    warning = ("digits-test: searched parameter 'momentum' is never read by the objective (trial 0): its values "
               "change nothing")
    assert [text for text in notices.said if "never read" in text] == [f"warning: {warning}"]
    client = MlflowClient(stores["tracking_uri"])
    assert client.get_run(result.parent_run_id).data.tags["hpo.warnings"] == warning
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    assert [run.data.tags["hpo.unread_params"] for run in runs] == ["momentum"] * 2


@pytest.mark.parametrize("population", [1, 2])
def test_patience_is_read_whether_or_not_a_trial_runs_out_of_it(population, unique, stores):
    """Early stopping read its patience only once a trial stopped improving: a space fixing
    'patience' was warned that the objective never read it, as long as every trial improved."""
    from conftest import digits_space

    space = digits_space(epochs=1)  # the first epoch always improves on the untrained model
    space = space.model_copy(update={"fixed": {**space.fixed, "patience": 3}})
    notices = Notices()
    hpo.search("digits_mlp", space, strategy="random", n_trials=2, population=population, study_name=unique,
               experiment=unique, evaluate_test=False, listener=notices, **stores)
    assert [text for text in notices.said if "never read" in text] == []


def test_a_misspelt_fixed_value_is_warned_of_with_the_name_it_is_closest_to(unique, stores):
    from conftest import digits_space

    space = digits_space(epochs=1)
    space = space.model_copy(update={"fixed": {"epochs": 1, "batchsize": 32}})
    notices = Notices()
    result = hpo.search("digits_mlp", space, strategy="random", n_trials=1, population=1, study_name=unique,
                        experiment=unique, evaluate_test=False, listener=notices, **stores)
    said = ("digits-test: fixed value 'batchsize' is not a parameter the built-in objectives read: did you mean "
            "'batch_size'?")
    assert f"warning: {said}" in notices.said
    assert any("fixed parameter 'batchsize' is never read" in text for text in notices.said)
    assert said in MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id).data.tags["hpo.warnings"]


def test_the_python_api_shows_the_progress_the_resume_line_and_if_asked_the_summary(unique, stores, capsys):
    _search(_lr, unique, stores, n_trials=2)
    capsys.readouterr()
    _search(_lr, unique, stores, n_trials=3, summary=True)
    out, err = capsys.readouterr()
    assert f"Resuming study {unique!r}: 2 of its 3 trials done (2 complete, 0 pruned, 0 failed)" in err
    assert "3/3" in err and "3 complete" in err  # the bar, as it ended
    assert "Leaderboard (minimize loss)" in out and "fixed: epochs=6" in out
    assert "validation:" not in out  # an objective that reports no val_ metric gets no empty line for them
    _search(_lr, unique, stores, n_trials=3, quiet=True)
    assert capsys.readouterr() == ("", "")


def test_a_users_listener_hears_every_event_beside_the_progress_bar(unique, stores):
    heard = []

    class Everything(hpo.SearchListener):
        def resumed(self, trials):
            heard.append(("resumed", len(trials)))

        def running(self, numbers):
            heard.append(("running", numbers))

        def trial_finished(self, trial):
            heard.append(("finished", trial.number))

    _search(_lr, unique, stores, n_trials=2, listener=Everything())
    assert heard == [("resumed", 0), ("running", [0]), ("finished", 0), ("running", [1]), ("finished", 1)]


def test_the_cli_refuses_a_rerun_that_differs_in_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "space.yaml").write_text("metric: loss\ndirection: minimize\n"
                                         "params: {lr: {type: float, low: 0.001, high: 1.0, log: true}}\n")
    (tmp_path / "mine.py").write_text("def objective(params, trial):\n    return params['lr']\n")
    search = [sys.executable, "-m", "hpo.cli", "search", "space.yaml", "--objective", "mine.py:objective",
              "--strategy", "random"]
    first = subprocess.run([*search, "--trials", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    for flags, said in ((["--trials", "1"], "--trials: study 'space-objective-random-seed0' has 2 trials done, "
                                            "more than 1: nothing to run; a budget above 2 extends it"),
                        (["--trials", "2", "--pruner", "median"], "--pruner: study 'space-objective-random-seed0' "
                                                                  "ran with none, not median: ")):
        again = subprocess.run([*search, *flags], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert again.returncode == 2
        (line,) = again.stderr.splitlines()  # one line: no blank one from a progress bar never drawn
        assert line.startswith(f"hpo: error: {said}")


@pytest.mark.parametrize("quiet", [True, False])
def test_an_optuna_style_callback_given_as_listener_is_refused_before_anything_runs(quiet, tmp_path):
    """Before: ``AttributeError: 'function' object has no attribute 'resumed'`` from inside the search."""
    def callback(study, trial):
        raise AssertionError("never called")

    with pytest.raises(HpoError) as refused:
        hpo.search(_lr, SPACE, home=tmp_path, n_trials=2, quiet=quiet, listener=callback)
    assert str(refused.value) == ("listener: takes an hpo.SearchListener (subclass it and override trial_finished, "
                                  "running, notice), got function")
    assert not list(tmp_path.iterdir())


def test_a_result_opens_its_optuna_study_and_tabulates_its_trials_as_optuna_does(stores, unique, tmp_path):
    """Optuna's plots, optuna-dashboard and ``study.trials_dataframe()`` work on the study a
    search leaves: the result names its storage, and its own table has the same trials."""
    from hpo.drivers.simulated import SimulatedOptions

    result = hpo.search(lambda params, trial: params["lr"] * 10, digits_space(epochs=1), strategy="grid", n_trials=3,
                        driver=SimulatedOptions(workers=1), study_name=unique, experiment=unique,
                        evaluate_test=False, quiet=True, home=tmp_path, **stores)
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    assert result.storage == stores["storage"] and study.best_value == result.best_value
    ours, theirs = result.trials_dataframe(), study.trials_dataframe()  # Optuna names its value after the metric
    assert ours["number"].tolist() == theirs["number"].tolist()
    assert ours["value"].tolist() == theirs["value_val_loss"].tolist()
    assert ours["params_lr"].tolist() == theirs["params_lr"].tolist()
