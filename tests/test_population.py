"""Population training: members trained together follow the same curves as alone, and each is
still its own trial. Real training on scikit-learn's digits and MNIST-1D."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from mlflow import MlflowClient
from rich.console import Console
from torch import nn

import hpo
from conftest import StopAt, child_runs, digits_space, left_behind
from hpo import Trial, TrialState
from hpo.population import OPTIMIZERS, SCHEDULES, Recipe, fit, train_population
from hpo.reporting._terminal import progress_shown
from hpo.strategies import params_key
from hpo.trial import DivergenceGuard
from objectives import digits_mlp, mnist1d_cnn

TWINS = 1e-6
"""How close a member's reports are to its solo twin's in float64 (accuracy is averaged in float32)."""

MEMBERS = [
    {"lr": 3e-3, "weight_decay": 0.0, "momentum": 0.9},
    {"lr": 1e-2, "weight_decay": 1e-3, "momentum": 0.8},
    {"lr": 5e-4, "weight_decay": 1e-4, "momentum": 0.5},
]


def trial(number: int, curve: list, **options) -> Trial:
    return Trial(number, seed=100 + number, metric="val_loss", on_report=lambda s, m: curve.append((s, m)), **options)


def alone(objective, params: list[dict], numbers: list[int] | None = None) -> list[list]:
    """Each member's reports, trained on its own by the objective (torch.optim)."""
    curves = []
    for number, p in zip(numbers or range(len(params)), params, strict=True):
        curve: list = []
        objective(p, trial(number, curve))
        curves.append(curve)
    return curves


def together(objective, params: list[dict], options: dict | None = None) -> tuple[list[list], list]:
    """Each member's reports and outcome, trained as one population (``options``: each member's
    trial options, by its index)."""
    curves: list[list] = [[] for _ in params]
    trials = [trial(number, curves[number], **(options or {}).get(number, {})) for number in range(len(params))]
    recipe = objective.population(params[0], trials[0])
    outcomes = train_population(recipe, list(zip(params, trials, strict=True)), "val_loss")
    return curves, outcomes


@pytest.fixture
def exact():
    """Train in float64: members and their solo twins differ by the order of their sums alone
    (stacked, vmapped or batched kernels against single ones), which float32 rounds apart by up to
    1e-3 once a large step (RMSprop at lr 1e-2) amplifies it, and by how much depends on the CPU's
    kernels. In float64 the rounding is ~1e-16: any difference left is the algorithm's."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def assert_same_curves(first: list, second: list, tolerance: float = TWINS) -> None:
    assert [step for step, _ in first] == [step for step, _ in second]
    for (step, a), (_, b) in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=tolerance, abs=tolerance), (step, name)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_population_reproduces_its_members_trained_alone(optimizer, schedule, exact):
    base = {"optimizer": optimizer, "schedule": schedule, "epochs": 4, "dropout": 0.0, "batch_size": 128,
            "patience": 100}
    params = [{**base, **member} for member in MEMBERS]
    curves, outcomes = together(digits_mlp, params)
    for solo, member in zip(alone(digits_mlp, params), curves, strict=True):
        assert len(solo) == 5  # the untrained model, then four epochs
        assert_same_curves(solo, member)
    assert [o.state for o in outcomes] == [TrialState.COMPLETE] * 3


def test_members_with_their_own_optimizer_schedule_and_epochs_reproduce_their_twins(exact):
    """The mission's full space varies the optimizer: every member keeps its own update rule,
    state, schedule, epochs and patience, in one population."""
    base = {"dropout": 0.0, "batch_size": 128, "patience": 100}
    params = [{**base, **MEMBERS[0], "optimizer": "adamw", "schedule": "cosine", "epochs": 4},
              {**base, **MEMBERS[1], "optimizer": "sgd_momentum", "schedule": "step", "epochs": 3},
              {**base, **MEMBERS[2], "optimizer": "adamw", "schedule": "constant", "epochs": 2},
              {**base, **MEMBERS[0], "optimizer": "rmsprop", "schedule": "exponential", "epochs": 4, "patience": 1}]
    curves, outcomes = together(digits_mlp, params)
    for solo, member in zip(alone(digits_mlp, params), curves, strict=True):
        assert_same_curves(solo, member)
    assert [len(curve) for curve in curves[:3]] == [5, 4, 3]  # each its own epochs
    assert [o.state for o in outcomes] == [TrialState.COMPLETE] * 4


def test_a_stopped_members_rows_are_refilled_and_the_newcomer_trains_as_if_alone(exact):
    """A member pruned at epoch 1 leaves its rows at the epoch's end; a new trial takes them, from
    its own initialisation and first epoch, with fresh optimizer state, while the others train
    on undisturbed: every curve, the newcomers' included, is its solo twin's."""
    base = {"optimizer": "adam", "schedule": "cosine", "epochs": 3, "dropout": 0.0, "batch_size": 128,
            "patience": 100}
    params = [{**base, **member} for member in MEMBERS] + [{**base, "lr": 2e-3, "weight_decay": 0.0},
                                                           {**base, "lr": 7e-3, "weight_decay": 1e-4,
                                                            "optimizer": "sgd_momentum", "momentum": 0.9}]
    curves: list[list] = [[] for _ in params]
    trials = [trial(n, curves[n], **({"pruning": StopAt(1)} if n == 1 else {})) for n in range(len(params))]
    waiting = [(params[3], trials[3]), (params[4], trials[4])]
    asked, ended = [], []

    def refill(count):
        asked.append(count)
        given, waiting[:] = waiting[:count], waiting[count:]
        return given

    recipe = digits_mlp.population(params[0], trials[0])
    outcomes = train_population(recipe, list(zip(params[:3], trials[:3], strict=True)), "val_loss", refill=refill,
                                ended=lambda stopped: ended.extend((t.number, outcome.state) for t, outcome in stopped))
    assert asked[0] == 1  # at the end of epoch 1, one row was free
    assert ended[0] == (1, TrialState.PRUNED) and sorted(n for n, _ in ended) == [0, 1, 2, 3, 4]
    assert [o.state for o in outcomes] == [TrialState.COMPLETE, TrialState.PRUNED] + [TrialState.COMPLETE] * 3
    solo = alone(digits_mlp, [params[n] for n in (0, 2, 3, 4)], numbers=[0, 2, 3, 4])
    for number, curve in zip((0, 2, 3, 4), solo, strict=True):
        assert len(curves[number]) == 4
        assert_same_curves(curve, curves[number])


def batch_norm_recipe(trial: Trial) -> Recipe:
    splits = digits_mlp.setup("cpu")

    def build(params):
        return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    return Recipe(build, (splits.x_train, splits.y_train), (splits.x_val, splits.y_val))


def recipe_against_its_twins(recipe_of, base: dict) -> list[list]:
    """Each member's curve, trained in a population by the recipe ``recipe_of(trial)`` returns,
    checked against its solo twin's (``fit``: plain torch, no vmap)."""
    params = [{**base, **member} for member in MEMBERS]
    curves: list[list] = [[] for _ in params]
    trials = [trial(n, curves[n]) for n in range(3)]
    outcomes = train_population(recipe_of(trials[0]), list(zip(params, trials, strict=True)), "val_loss")
    assert [o.state for o in outcomes] == [TrialState.COMPLETE] * 3
    for number in range(3):
        curve: list = []
        fit(recipe_of(trials[0]), params[number], trial(number, curve))
        assert_same_curves(curve, curves[number])
    return curves


def test_batch_norm_trains_in_populations_each_member_with_its_own_statistics(exact):
    recipe_against_its_twins(batch_norm_recipe, {"optimizer": "adamw", "epochs": 3, "dropout": 0.0, "batch_size": 64,
                                                 "patience": 100})


def regression_recipe(trial: Trial) -> Recipe:
    """A regression of my own: targets of shape (n, 1), mean squared error, no accuracy."""
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    y = (x**2).sum(1, keepdim=True)

    def build(params):
        return nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 1))

    return Recipe(build, (x[:250], y[:250]), (x[250:], y[250:]), loss=nn.functional.mse_loss, accuracy=False)


def test_a_regression_recipe_trains_alone_and_in_populations(exact):
    """Its members were scored for accuracy all the same: ``argmax`` against targets of shape
    (n, 1) failed every trial, alone too, at hpo's own line (``_train.py:514: RuntimeError: The
    size of tensor a (4) must match the size of tensor b (500)``)."""
    curves = recipe_against_its_twins(regression_recipe, {"optimizer": "adamw", "epochs": 3, "dropout": 0.0,
                                                          "batch_size": 50, "patience": 100})
    assert [[sorted(metrics) for _, metrics in curve] for curve in curves] == [[["train_loss", "val_loss"]] * 4] * 3


def test_a_convolutional_population_reproduces_its_members_trained_alone(exact):
    base = {"optimizer": "adamw", "schedule": "cosine", "epochs": 2, "dropout": 0.0, "batch_size": 64}
    params = [{**base, **member} for member in MEMBERS]
    curves, _ = together(mnist1d_cnn, params)
    for solo, member in zip(alone(mnist1d_cnn, params), curves, strict=True):
        assert_same_curves(solo, member)


def test_an_mlp_population_computes_bit_for_bit_what_vmap_computes(monkeypatch):
    """An MLP's members are computed with batched matrix products rather than vmap: the same
    numbers to the last bit (dropout masks included), so a search's results do not depend on
    which path ran. A wide model, where a fused product and bias round differently."""
    base = {"optimizer": "adamw", "epochs": 2, "batch_size": 64, "hidden": 512}
    params = [{**base, **member, "dropout": rate} for member, rate in zip(MEMBERS, [0.5, 0.2, 0.0], strict=True)]
    chained, _ = together(digits_mlp, params)
    monkeypatch.setattr("hpo.population._train._chain", lambda model: None)
    assert chained == together(digits_mlp, params)[0]


def test_a_member_drops_the_same_units_in_any_population(exact):
    """Its masks come from its own stream (its seed, its steps): the same trial trains the same
    curve whichever population, row and neighbours it has, and when it joins one late."""
    base = {"optimizer": "adam", "epochs": 3, "batch_size": 64, "patience": 100}
    rates = [0.3, 0.5, 0.2]
    params = {n: {**base, **member, "dropout": rate} for n, (member, rate) in enumerate(zip(MEMBERS, rates, strict=True))}

    def population_of(numbers: list[int], refill_with: list[int] = ()) -> dict[int, list]:
        curves: dict[int, list] = {n: [] for n in [*numbers, *refill_with]}
        waiting = [(params[n], trial(n, curves[n])) for n in refill_with]
        pruned = {numbers[0]: {"pruning": StopAt(1)}} if refill_with else {}
        members = [(params[n], trial(n, curves[n], **pruned.get(n, {}))) for n in numbers]

        def refill(count):
            given, waiting[:] = waiting[:count], waiting[count:]
            return given

        train_population(digits_mlp.population(*members[0]), members, "val_loss", refill=refill)
        return curves

    first = population_of([0, 1, 2])
    again = population_of([2, 0])  # other rows, other neighbours
    late = population_of([1, 0], refill_with=[2])  # 2 takes 1's rows after its first epoch
    for number in (0, 2):
        assert_same_curves(first[number], again[number])
    assert_same_curves(first[2], late[2])


def test_members_keep_their_own_dropout_rate(exact):
    base = {"optimizer": "adam", "epochs": 5, "batch_size": 64, "lr": 3e-3}
    params = [{**base, "dropout": 0.0}, {**base, "dropout": 0.6}]
    curves, _ = together(digits_mlp, params)
    solo = alone(digits_mlp, params)
    assert_same_curves(solo[0], curves[0])

    def last_train_loss(curve: list) -> float:
        return curve[-1][1]["train_loss"]

    # Heavy dropout raises the training loss, together as alone, by a similar amount.
    assert last_train_loss(solo[1]) > 1.5 * last_train_loss(solo[0])
    assert last_train_loss(curves[1]) > 1.5 * last_train_loss(curves[0])
    assert last_train_loss(curves[1]) == pytest.approx(last_train_loss(solo[1]), rel=0.3)


def test_each_member_drops_its_own_rate_of_inputs_and_keeps_their_expectation():
    import torch

    from hpo.population._train import _dropout, _mask_rate

    rates = torch.tensor([0.0, 0.1, 0.37, 0.5, 0.9])
    torch.manual_seed(0)
    x = torch.ones(len(rates), 200, 301)  # an odd number of inputs per member: bits are drawn per member
    keys = torch.arange(len(rates), dtype=torch.int64)
    out = _dropout(x, *(t.view(-1, 1, 1) for t in _mask_rate(rates)), keys, members=1)
    dropped = (out == 0).float().mean(dim=(1, 2))
    assert dropped.tolist() == pytest.approx(rates.tolist(), abs=0.01)  # five standard deviations
    assert out.mean(dim=(1, 2)).tolist() == pytest.approx([1.0] * len(rates), abs=0.06)
    assert out[1].unique().tolist() == [0.0, pytest.approx(1 / 0.9, rel=1e-4)]


_FAULTS_BY_EPOCHS = """
import resource, sys
import hpo
from hpo.population import train_population
from objectives import mnist1d_mlp

def page_faults(epochs):
    params = [{"lr": 1e-3 * (1 + i), "dropout": 0.01 * i, "epochs": epochs, "batch_size": 64} for i in range(32)]
    trials = [hpo.Trial(i, seed=i, metric="val_loss") for i in range(32)]
    recipe = mnist1d_mlp.population(params[0], trials[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_population(recipe, list(zip(params, trials)), "val_loss")
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

page_faults(1)
print(min(page_faults(3) for _ in range(2)) - min(page_faults(1) for _ in range(2)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator is tuned on Linux only")
def test_a_cpu_populations_steps_reuse_their_memory_instead_of_faulting_it_in_again():
    """A K=32 step's activations (about 800 KB each) come from memory the previous step freed:
    with glibc's defaults each step faulted its pages in again. Counted in a fresh process (the
    allocator as Python starts it): without it two epochs' 100 steps more cost 33,000-46,000 more page
    faults on this machine; with it, from -800 to 1,900 (the heap grown or trimmed once, not per step)."""
    extra = subprocess.run([sys.executable, "-c", _FAULTS_BY_EPOCHS], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parents[1])
    assert int(extra.stdout.split()[-1]) < 5000


def test_pruning_one_member_leaves_the_others_curves_unchanged():
    base = {"optimizer": "sgd_momentum", "epochs": 5, "dropout": 0.0, "batch_size": 128}
    params = [{**base, **member} for member in MEMBERS]
    free, _ = together(digits_mlp, params)
    stop_at_2 = {"pruning": StopAt(2)}
    pruned, outcomes = together(digits_mlp, params, {1: stop_at_2})
    assert (outcomes[1].state, outcomes[1].reason) == (TrialState.PRUNED, "median")
    assert [step for step, _ in pruned[1]] == [0, 1, 2]
    for member in (0, 2):
        assert_same_curves(free[member], pruned[member])
        assert outcomes[member].state is TrialState.COMPLETE


def test_a_member_that_goes_nan_is_pruned_as_diverged_and_the_others_finish(exact):
    base = {"optimizer": "sgd_momentum", "epochs": 4, "dropout": 0.0, "batch_size": 128}
    params = [{**base, **MEMBERS[0]}, {**base, "lr": 1e4, "momentum": 0.9}, {**base, **MEMBERS[2]}]
    guard = {"guard": DivergenceGuard()}
    curves, outcomes = together(digits_mlp, params, {n: guard for n in range(3)})
    assert (outcomes[1].state, outcomes[1].reason) == (TrialState.PRUNED, "diverged")
    solo = alone(digits_mlp, [params[0], params[2]], numbers=[0, 2])
    for member, curve in zip((0, 2), solo, strict=True):
        assert outcomes[member].state is TrialState.COMPLETE and math.isfinite(outcomes[member].value)
        assert_same_curves(curve, curves[member])


def test_a_search_with_populations_keeps_every_trial_its_own(stores, unique):
    space = digits_space(epochs=3, lr={"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": 6},
                         weight_decay={"type": "float", "low": 1e-6, "high": 1e-2, "log": True, "grid": [1e-5, 1e-3]})
    result = hpo.search("digits_mlp", space, strategy="grid", report=False, n_trials=12, population=8, pruner="median",
                        experiment=unique, study_name=unique, evaluate_test=False, **stores)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    assert len(study.trials) == 12 == len({params_key(t.params) for t in study.trials})  # budget exact, points unique
    assert sorted(t.number for t in result.trials) == list(range(12))
    assert {t.seed for t in result.trials} == {hpo.trial.trial_seed(0, n) for n in range(12)}  # each its own seed
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    assert len(runs) == 12
    sizes = {r.data.tags["hpo.population"]: int(r.data.tags["hpo.population_size"]) for r in runs}
    assert list(sizes.values()) == [8]  # eight claimed together, the four left taking the rows of those that stopped
    client = MlflowClient(stores["tracking_uri"])
    for run in runs:  # each member's own curve, from the untrained model on
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == list(range(1, len(steps) + 1))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "initial_val_loss")] == [0]
        assert run.info.status == {"complete": "FINISHED", "pruned": "KILLED"}[run.data.tags["hpo.state"]]


@pytest.mark.parametrize("n_trials", [8, 16])
def test_a_small_budget_still_draws_its_batch_size_more_than_once(stores, unique, n_trials):
    """A population whose members all end together ends, and the next draws its group afresh; and
    no group takes more than half the budget. (A budget of 2K went to one batch size before.)"""
    space = hpo.SearchSpace.model_validate({
        "name": "batch", "metric": "val_loss", "direction": "minimize", "objective": "digits_mlp", "fixed": {"epochs": 2},
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.05, "log": True},
                   "batch_size": {"type": "int", "low": 32, "high": 256, "log": True}}})
    result = hpo.search("digits_mlp", space, strategy="random", report=False, n_trials=n_trials, population=4, experiment=unique,
                        study_name=unique, evaluate_test=False, **stores)
    assert len(result.trials) == n_trials
    groups: dict[str, set] = {}
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        groups.setdefault(run.data.tags["hpo.population"], set()).add(run.data.params["batch_size"])
    assert all(len(sizes) == 1 for sizes in groups.values()) and len(groups) == n_trials // 4
    assert len(set().union(*groups.values())) > 1


BATCH_SPACE = {"name": "batch", "metric": "val_loss", "direction": "minimize", "objective": "digits_mlp",
               "fixed": {"epochs": 1}, "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.05, "log": True},
                                                  "batch_size": {"type": "int", "low": 32, "high": 256, "log": True}}}


@pytest.mark.parametrize("workers", [1, 2])
def test_auto_keeps_populations_small_enough_for_a_budget_to_try_several_batch_sizes(stores, unique, workers):
    """Under auto a population had 32 rows on a CPU (1024 on a GPU) whatever the budget, and its
    members share one batch size: 24 trials tried one. Now auto leaves the budget at least four
    draws of it, and says so once, however many workers say it."""
    notices = []

    class Notices(hpo.SearchListener):
        def notice(self, text):
            notices.append(text)

    result = hpo.search("digits_mlp", BATCH_SPACE, strategy="random", report=False, n_trials=24, population="auto",
                        driver=hpo.OptunaOptions(workers=workers), listener=Notices(), experiment=unique,
                        study_name=unique, evaluate_test=False, **stores)
    assert len(result.trials) == 24
    groups: dict[str, set] = {}
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        groups.setdefault(run.data.tags["hpo.population"], set()).add(run.data.params["batch_size"])
    assert all(len(sizes) == 1 for sizes in groups.values()) and len(set().union(*groups.values())) >= 4
    assert [text for text in notices if text.startswith("population")] == [
        "population of 3, not 32 (auto): so that 24 trials try batch_size at least 4 times (a population shares "
        "one); --population 32 trains faster and tries it once"]


def test_a_population_asked_for_says_when_the_budget_tries_its_batch_size_only_a_few_times():
    from hpo.loop import population_size

    said = []

    class Notices(hpo.SearchListener):
        def notice(self, text):
            said.append(text)

    context = digits_mlp.setup("cpu")
    for n_trials in (16, 64):
        plan = hpo.prepare("digits_mlp", BATCH_SPACE, strategy="random", n_trials=n_trials).plan
        assert population_size(8, plan, digits_mlp, "cpu", context, Notices()) == 8  # as asked
    assert said == ["population of 8: 16 trials try batch_size twice (a population shares one); a smaller "
                    "--population tries more"]  # 64 trials try it four times: nothing to say
    plan = hpo.prepare("digits_mlp", {**BATCH_SPACE, "params": {"lr": BATCH_SPACE["params"]["lr"]}}, n_trials=16,
                       strategy="random").plan
    assert population_size("auto", plan, digits_mlp, "cpu", context, Notices()) == 32  # no batch size searched
    assert len(said) == 1


def test_a_group_takes_two_populations_worth_but_never_more_than_half_a_budget_beyond_one():
    from hpo.loop import group_quota
    from hpo.strategies import STRATEGIES

    def quota(strategy: str, n_trials: int, size: int) -> int | None:
        return group_quota(SimpleNamespace(strategy=STRATEGIES[strategy](), n_trials=n_trials), size)

    assert [quota("random", n, 8) for n in (8, 16, 24, 32, 1000)] == [8, 8, 12, 16, 16]
    assert quota("tpe", 64, 32) == 32 and quota("grid", 16, 8) is None  # a grid's groups are its points


def plain(params, trial):
    return params["lr"]


def test_population_is_refused_where_it_cannot_run(stores, unique):
    with pytest.raises(hpo.HpoError, match=r"population: objective '.*plain' cannot train populations"):
        hpo.prepare(plain, digits_space(), population=4, **stores)
    with pytest.raises(hpo.HpoError, match="population: expected a number or 'auto', got 'many'"):
        hpo.prepare("digits_mlp", digits_space(), population="many", **stores)
    with pytest.raises(hpo.HpoError, match="population: expected a number or 'auto', got True"):
        hpo.prepare("digits_mlp", digits_space(), population=True, **stores)  # int(True) would be 1
    result = hpo.search(plain, digits_space(), strategy="grid", report=False, n_trials=3, population="auto", experiment=unique,
                        study_name=unique, evaluate_test=False, **stores)
    assert len(result.trials) == 3  # auto: one at a time for an objective without populations


class GruObjective:
    """A recurrent model: ``vmap`` has no batching rule for ``aten::gru``."""

    def population(self, params, trial):
        splits = digits_mlp.setup("cpu")

        class Recurrent(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.GRU(8, 16, batch_first=True)
                self.head = nn.Linear(16, 10)

            def forward(self, x):
                return self.head(self.rnn(x.view(len(x), 8, 8))[0][:, -1])

        return Recipe(lambda member: Recurrent(), (splits.x_train, splits.y_train), (splits.x_val, splits.y_val))

    def __call__(self, params, trial):
        recipe = self.population(params, trial)
        return fit(recipe, params, trial)


def test_what_cannot_stack_is_refused_before_the_first_trial_and_auto_trains_it_alone(stores, unique):
    space = digits_space(epochs=1)
    with pytest.raises(hpo.HpoError, match=r"^population: objective '.*' cannot train populations: its GRU layer "
                                           r"'rnn' does not train under torch.func's vmap$"):
        hpo.search(GruObjective(), space, strategy="grid", report=False, n_trials=3, population=4, experiment=unique,
                   study_name=unique, evaluate_test=False, **stores)
    assert left_behind(stores, unique, unique) == []

    notices = []

    class Notices(hpo.SearchListener):
        def notice(self, text):
            notices.append(text)

    result = hpo.search(GruObjective(), space, strategy="grid", report=False, n_trials=3, population="auto", listener=Notices(),
                        experiment=unique + "auto", study_name=unique + "auto", evaluate_test=False, **stores)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3
    assert notices == ["population auto trains one trial at a time: its GRU layer 'rnn' does not train under "
                       "torch.func's vmap"]
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    assert len({r.data.tags.get("hpo.population") for r in runs}) == 1 and "hpo.population" not in runs[0].data.tags


class Widths:
    """A model built from a searched width the trainer knows no default for, and dropout."""

    def population(self, params, trial):
        splits = digits_mlp.setup("cpu")
        return Recipe(self.build, (splits.x_train, splits.y_train), (splits.x_val, splits.y_val))

    def build(self, params):
        return nn.Sequential(nn.Linear(64, params["hidden"]), nn.ReLU(), nn.Dropout(params["dropout"]),
                             nn.Linear(params["hidden"], 10))

    def __call__(self, params, trial):
        return fit(self.population(params, trial), params, trial)


def test_a_model_built_from_searched_parameters_trains_in_populations(stores, unique):
    """The check before the first trial built the model from the fixed values alone, so an
    objective whose model reads a searched width stopped the search with a KeyError."""
    space = digits_space(epochs=1, hidden={"type": "int", "low": 8, "high": 32, "grid": [8, 32]},
                         dropout={"type": "float", "low": 0.0, "high": 0.5, "grid": [0.0, 0.2]})
    result = hpo.search(Widths(), space, strategy="grid", report=False, n_trials=4, population=2, experiment=unique,
                        study_name=unique, evaluate_test=False, **stores)
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 4
    groups: dict[str, set] = {}
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        groups.setdefault(run.data.tags["hpo.population"], set()).add(run.data.params["hidden"])
    assert sorted(map(len, groups.values())) == [1, 1] and set().union(*groups.values()) == {"8", "32"}


class Misnamed(Widths):
    def build(self, params):
        return nn.Linear(64, params["width"])


def test_a_model_that_cannot_be_built_stops_the_search_in_one_line_naming_its_line(stores, unique):
    space = digits_space(epochs=1, hidden={"type": "int", "low": 8, "high": 32})
    with pytest.raises(hpo.HpoError, match=r"^objective: (tests/)?test_population.py:\d+: KeyError: 'width' \(checking "
                                           r"its population before the first trial\)$"):
        hpo.search(Misnamed(), space, strategy="random", report=False, n_trials=4, population="auto", experiment=unique,
                   study_name=unique, evaluate_test=False, **stores)
    assert left_behind(stores, unique, unique) == []


class FromNumpy(Widths):
    def population(self, params, trial):
        splits = digits_mlp.setup("cpu")
        return Recipe(self.build, (splits.x_train.numpy(), splits.y_train.numpy()), (splits.x_val, splits.y_val))


def test_data_that_is_not_tensors_is_refused_in_one_line_naming_the_objectives_line(stores, unique):
    """A numpy array in a recipe failed each trial inside hpo's trainer (``_train.py:430: AttributeError:
    'str' object has no attribute 'type'``) and stopped the search after three."""
    space = digits_space(epochs=1, hidden={"type": "int", "low": 8, "high": 32})
    with pytest.raises(hpo.HpoError, match=r"^objective: (tests/)?test_population.py:\d+: TypeError: Recipe: train "
                                           r"inputs must be a torch.Tensor, got numpy.ndarray \(torch.as_tensor"):
        hpo.search(FromNumpy(), space, strategy="random", report=False, n_trials=4, population=2, experiment=unique,
                   study_name=unique, evaluate_test=False, **stores)
    x, y = torch.zeros(4, 2), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^Recipe: validation has 4 inputs but 3 targets$"):
        Recipe(nn.Identity, (x, torch.zeros(4, dtype=torch.long)), (x, y))
    with pytest.raises(TypeError, match=r"^Recipe: train must be a pair \(inputs, targets\), got Tensor$"):
        Recipe(nn.Identity, x, (x, y))


def test_a_population_smaller_than_asked_says_so_once_with_why(stores, unique):
    notices = []

    class Notices(hpo.SearchListener):
        def notice(self, text):
            notices.append(text)

    result = hpo.search("digits_mlp", digits_space(epochs=1), strategy="grid", report=False, n_trials=3, population=8,
                        listener=Notices(), experiment=unique, study_name=unique, evaluate_test=False, **stores)
    assert len(result.trials) == 3
    said = "population of 3, not 8: the budget had no more trials"
    assert [text for text in notices if text.startswith("population")] == [said]
    assert MlflowClient(stores["tracking_uri"]).get_run(result.parent_run_id).data.tags["hpo.warnings"] == said


def test_a_grid_smaller_than_the_budget_says_so_before_the_first_trial(stores, unique):
    """The budget asks 8 trials of a 3-point grid: said up front, the population's notice names
    the grid, and the search ends after its 3 points."""
    notices = []

    class Notices(hpo.SearchListener):
        def notice(self, text):
            notices.append(text)

    prepared = hpo.prepare("digits_mlp", digits_space(epochs=1), strategy="grid", n_trials=8, population=4,
                           experiment=unique, study_name=unique, evaluate_test=False, **stores)
    assert prepared.plan.runnable_trials == 3
    with progress_shown(prepared.plan, Console(file=io.StringIO())) as bar:
        assert bar.progress.tasks[0].total == 3  # the bar is full at the grid's end
    result = prepared.run(Notices())
    assert len(result.trials) == 3
    assert notices == ["warning: digits-test: its grid has 3 points, fewer than the 8 trials of the budget: the search "
                       "ends after them (more grid values or grid_points widen it)",
                       "population of 3, not 4: the grid had no more points (3 in all)"]
