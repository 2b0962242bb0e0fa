"""The pruning rules, engine-free: what they decide from per-step tables. Successive halving and
Hyperband decide as Optuna's pruners do on the same trials; the median rule compares with every
trial that reached the step, so that members of one population judge each other."""

from __future__ import annotations

import random

import optuna
import pytest
from mlflow import MlflowClient

import hpo
from hpo.pruning import Hyperband, Median, Pruner, SuccessiveHalving
from hpo.spaces import Pruning, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


def curves(seed: int, trials: int, steps: int) -> list[list[float]]:
    """Noisy decreasing learning curves of trials of unequal quality."""
    rng = random.Random(seed)
    made = []
    for _ in range(trials):
        level, speed = rng.uniform(0.1, 1.0), rng.uniform(0.2, 2.0)
        made.append([level + 1.0 / (1 + speed * step) + rng.gauss(0, 0.02) for step in range(steps)])
    return made


def optuna_pruned_at(pruner: optuna.pruners.BasePruner, made: list[list[float]], direction: str) -> list[int | None]:
    study = optuna.create_study(direction=direction, pruner=pruner, study_name="study")
    stopped: list[int | None] = []
    for curve in made:
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                stopped.append(step)
                break
        else:
            study.tell(trial, curve[-1])
            stopped.append(None)
    return stopped


def pruned_at(pruner: Pruner, made: list[list[float]]) -> list[int | None]:
    """Trials one after another, each reporting its steps until the rule stops it."""
    stopped: list[int | None] = []
    for number, curve in enumerate(made):
        trial = pruner.trial(number, stage=0)
        for step, value in enumerate(curve):
            trial.observe(step, value)
            if trial.decide(step) is not None:
                stopped.append(step)
                break
        else:
            stopped.append(None)
    return stopped


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize("seed", range(4))
def test_successive_halving_decides_as_optunas(seed, direction):
    made = curves(seed, 40, 20)
    if direction == "maximize":
        made = [[-v for v in curve] for curve in made]
    sign = 1 if direction == "minimize" else -1
    ours = pruned_at(Pruner(SuccessiveHalving(min_resource=2, reduction_factor=3, sign=sign)), made)
    theirs = optuna_pruned_at(optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3), made,
                              direction)
    assert ours == theirs
    assert any(step is not None for step in ours) and any(step is None for step in ours)


@pytest.mark.parametrize("seed", range(4))
def test_hyperband_decides_as_optunas(seed):
    made = curves(seed, 60, 27)
    ours = pruned_at(Pruner(Hyperband(min_resource=1, max_resource=27, reduction_factor=3, study_name="study")), made)
    theirs = optuna_pruned_at(optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3),
                              made, "minimize")
    assert ours == theirs
    rule = Hyperband(min_resource=1, max_resource=27, reduction_factor=3, study_name="study")
    assert len({rule.bracket(n) for n in range(60)}) == 4  # log3(27) + 1 brackets, all in use


def test_the_median_rule_waits_for_its_warmup_and_compares_the_best_so_far():
    rule = Median(warmup_steps=2, warmup_trials=3)
    pruner = Pruner(rule)
    for number, curve in enumerate([[1.0, 0.6, 0.5, 0.4], [1.0, 0.7, 0.6, 0.5], [1.0, 0.5, 0.4, 0.3]]):
        trial = pruner.trial(number, 0)
        for step, value in enumerate(curve):
            trial.observe(step, value)
            assert trial.decide(step) is None  # fewer than three others at every step
    late = pruner.trial(3, 0)
    late.observe(0, 1.0)
    late.observe(1, 0.9)
    assert late.decide(1) is None  # warm-up: its second report
    late.observe(2, 0.55)
    said = late.decide(2)
    assert said is not None and said.reason == "median"
    assert said.detail == "at epoch 2: 0.55 > median 0.5 of 3 trials"
    good = pruner.trial(4, 0)
    for step, value in enumerate([1.0, 0.4, 0.6]):  # its best so far (0.4) counts, not its last
        good.observe(step, value)
    assert good.decide(2) is None


def test_members_reporting_together_judge_each_other_from_the_first_population():
    """Eight members of a first population, nothing finished yet: with every member's report of
    the step in before any is judged, the worse half stops."""
    pruner = Pruner(Median(warmup_steps=1, warmup_trials=4))
    members = [pruner.trial(number, 0) for number in range(8)]
    for member in members:
        member.observe(1, float(member.number))
    verdicts = [member.decide(1) for member in members]
    assert [v is not None for v in verdicts] == [False] * 4 + [True] * 4
    assert verdicts[4].detail == "at epoch 1: 4 > median 3 of 7 trials"


def test_trials_compare_within_their_stage_unless_told_otherwise():
    for by_stage, expected in ((True, None), (False, "median")):
        pruner = Pruner(Median(warmup_steps=0, warmup_trials=1), by_stage=by_stage)
        coarse = pruner.trial(0, stage=0)
        coarse.observe(0, 0.1)
        fine = pruner.trial(1, stage=1)
        fine.observe(0, 0.5)
        verdict = fine.decide(0)
        assert (verdict.reason if verdict else None) == expected


def test_a_nan_value_stops_a_trial_at_its_first_rung():
    pruner = Pruner(SuccessiveHalving(min_resource=1))
    trial = pruner.trial(0, 0)
    trial.observe(1, float("nan"))
    assert trial.decide(1) is not None


def test_maximised_metrics_are_shown_as_reported():
    pruner = Pruner(Median(warmup_steps=0, warmup_trials=1, sign=-1))
    first = pruner.trial(0, 0)
    first.observe(0, 0.9)
    second = pruner.trial(1, 0)
    second.observe(0, 0.5)
    assert second.decide(0).detail == "at epoch 0: 0.5 < median 0.9 of 1 trial"


def test_the_pruner_of_a_search_follows_its_space():
    from hpo.pruning import make_pruner

    space = SearchSpace.model_validate({"name": "s", "metric": "acc", "direction": "maximize", "fixed": {"epochs": 20},
                                        "params": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}})
    assert make_pruner(Pruning(), space, "s") is None
    median = make_pruner(Pruning(pruner="median", warmup_trials=2), space, "s")
    assert median.rule == Median(warmup_steps=4, warmup_trials=2, sign=-1)
    halving = make_pruner(Pruning(pruner="successive-halving", warmup_steps=3), space, "s")
    assert halving.rule == SuccessiveHalving(min_resource=3, sign=-1)
    hyperband = make_pruner(Pruning(pruner="hyperband", by_stage=False), space, "s")
    assert (hyperband.rule.min_resource, hyperband.rule.max_resource, hyperband.by_stage) == (4, 20, False)


@pytest.mark.parametrize("rule", [Median(warmup_steps=3, warmup_trials=2),
                                  SuccessiveHalving(min_resource=2, reduction_factor=3),
                                  Hyperband(min_resource=1, max_resource=27, reduction_factor=3, study_name="s")],
                         ids=["median", "successive-halving", "hyperband"])
def test_a_rule_that_says_it_cannot_stop_a_report_never_does(rule):
    """``may_stop`` lets a Ray actor go on without asking the driver: it must be False only where
    ``judge`` goes on whatever the table holds (steps reported irregularly, as users do)."""
    from hpo.pruning._pruner import _Group

    rng = random.Random(0)
    table, skipped, stopped = _Group(), 0, 0
    for number, curve in enumerate(curves(1, 80, 27)):
        own, before = {}, -1
        for step in sorted(rng.sample(range(27), rng.randint(3, 27))):
            own[step] = curve[step]
            table.add(number, step, curve[step])
            verdict = rule.judge(number, step, dict(own), table)
            if not rule.may_stop(number, step, before):
                assert verdict is None, (number, step, before)
                skipped += 1
            stopped += verdict is not None
            before = step
            if verdict is not None:
                break
    assert skipped and stopped  # both kinds of report happened


@pytest.mark.parametrize("rule", [Median(warmup_steps=3, warmup_trials=2),
                                  SuccessiveHalving(min_resource=2, reduction_factor=3),
                                  Hyperband(min_resource=1, max_resource=27, reduction_factor=3, study_name="s")],
                         ids=["median", "successive-halving", "hyperband"])
def test_a_rules_first_step_is_the_first_it_stops_a_trial_at(rule):
    from hpo.pruning._pruner import _Group

    table, stopped_at = _Group(), []
    for number, curve in enumerate(curves(2, 80, 27)):
        for step, value in enumerate(curve):
            table.add(number, step, value)
            if rule.judge(number, step, dict(enumerate(curve[:step + 1])), table) is not None:
                stopped_at.append(step)
                break
    assert min(stopped_at) == rule.first_step


class _Notices(hpo.SearchListener):
    def __init__(self):
        self.said = []

    def notice(self, text):
        self.said.append(text)


def _three_steps(params, trial):
    for step in range(3):
        trial.report(step, loss=params["x"] + 1.0 / (1 + step))
    return params["x"]


@pytest.mark.parametrize("warmup_steps", [3, 2])
def test_a_warmup_longer_than_the_trials_is_warned_of_once(warmup_steps, stores, unique):
    """``--warmup-steps 100`` on 25-epoch trials pruned nothing, and nothing said so."""
    space = {"name": "three", "metric": "loss", "direction": "minimize",
             "params": {"x": {"type": "float", "low": 0.0, "high": 1.0}}}
    notices = _Notices()
    result = hpo.search(_three_steps, space, strategy="random", report=False, n_trials=3, pruner="median",
                        warmup_steps=warmup_steps, warmup_trials=1, study_name=f"{unique}-{warmup_steps}",
                        experiment=unique, listener=notices, **stores)
    warning = ("three: the median pruner judges no trial before step 3 (its warm-up), and trial 0 reported steps up "
               "to 2: it stops no trial that reports as long (--warmup-steps, or warmup_steps under the space's "
               "pruning:, sets the warm-up)")
    warned = [text for text in notices.said if "warm-up" in text]
    tag = MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id).data.tags.get("hpo.warnings")
    if warmup_steps == 3:
        assert (warned, tag) == ([f"warning: {warning}"], warning)
    else:  # judged at its last step: it can prune
        assert (warned, tag) == ([], None)
