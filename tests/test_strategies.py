"""One suite for every planning strategy, replayed on a simulated objective at no compute cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo import SearchSpace, TrialRecord, TrialState
from hpo.spaces import CategoricalParam, IntParam
from hpo.strategies import (
    STRATEGIES,
    WAIT,
    BaseStrategy,
    CoarseToFineStrategy,
    GridStrategy,
    RandomStrategy,
    TpeStrategy,
    params_key,
)

SPACE = SearchSpace.model_validate(
    {
        "name": "suite",
        "metric": "loss",
        "direction": "minimize",
        "params": {
            "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True, "grid_points": 4},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1, "grid_points": 3},
            "batch_size": {"type": "int", "low": 16, "high": 256, "log": True, "grid": [16, 64, 256]},
            "optimizer": {"type": "categorical", "choices": ["sgd", "nesterov", "adam"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.99, "grid": [0.9], "condition": {"optimizer": ["nesterov"]}},
        },
    }
)


def simulated_loss(params: dict) -> float:
    """A smooth landscape with its optimum at lr = 1e-3, dropout 0.2, adam."""
    loss = (math.log10(params["lr"]) + 3) ** 2 + (params["dropout"] - 0.2) ** 2
    return loss + (0 if params["optimizer"] == "adam" else 0.5)


def replay(strategy: BaseStrategy, n_trials: int, space: SearchSpace = SPACE, loss=simulated_loss) -> list[TrialRecord]:
    history: list[TrialRecord] = []
    while len(history) < n_trials:
        suggestion = strategy.suggest(space, history, n_trials)
        if suggestion is None:
            break
        history.append(
            TrialRecord(len(history), suggestion.params, TrialState.COMPLETE, loss(suggestion.params), suggestion.stage)
        )
    return history


def replay_grouped(strategy: BaseStrategy, n_trials: int, size: int, shape: tuple[str, ...] = ("batch_size",),
                   ) -> list[list[TrialRecord]]:
    """Claims of ``size`` trials as the store makes them for a population: the first one free,
    the rest sharing its ``shape`` values (``suggest_like``)."""
    history: list[TrialRecord] = []
    groups = []
    while len(history) < n_trials:
        first = strategy.suggest(SPACE, history, n_trials)
        if first is None or first is WAIT:
            break
        like = {name: value for name, value in first.params.items() if name in shape}
        group = [TrialRecord(len(history), first.params, TrialState.COMPLETE, simulated_loss(first.params), first.stage)]
        history.append(group[0])
        while len(group) < size and len(history) < n_trials:
            suggestion = strategy.suggest_like(SPACE, history, n_trials, like)
            if suggestion is None or suggestion is WAIT:
                break
            group.append(TrialRecord(len(history), suggestion.params, TrialState.COMPLETE,
                                     simulated_loss(suggestion.params), suggestion.stage))
            history.append(group[-1])
        groups.append(group)
    return groups


class StrategySuite:
    """Every planning strategy inherits these tests; subclasses provide ``make``."""

    n_trials = 36

    @pytest.fixture
    def make(self):
        raise NotImplementedError

    def test_suggestions_lie_in_the_space_with_the_right_types(self, make):
        for trial in replay(make(seed=0), self.n_trials):
            assert SPACE.contains(trial.params), trial.params
            assert isinstance(trial.params["batch_size"], int)
            assert isinstance(trial.params["lr"], float)
            assert trial.params["optimizer"] in ("sgd", "nesterov", "adam")

    def test_conditional_parameter_only_when_its_condition_holds(self, make):
        trials = replay(make(seed=0), self.n_trials)
        assert any("momentum" in t.params for t in trials)
        for trial in trials:
            assert ("momentum" in trial.params) == (trial.params["optimizer"] == "nesterov")

    def test_steps_are_respected(self, make):
        for trial in replay(make(seed=0), self.n_trials):
            assert trial.params["dropout"] == pytest.approx(round(trial.params["dropout"] * 10) / 10)

    def test_same_seed_gives_the_same_trials(self, make):
        first = [t.params for t in replay(make(seed=7), self.n_trials)]
        second = [t.params for t in replay(make(seed=7), self.n_trials)]
        assert first == second

    def test_different_seeds_give_different_trials(self, make):
        assert [t.params for t in replay(make(seed=1), self.n_trials)] != [t.params for t in replay(make(seed=2), self.n_trials)]

    def test_log_scaled_parameter_spreads_over_decades(self, make):
        decades = {math.floor(math.log10(t.params["lr"])) for t in replay(make(seed=0), self.n_trials)}
        assert len(decades) >= 3  # a linear scale would put nearly every draw in [0.1, 1]

    def test_resume_continues_the_same_sequence(self, make):
        full = replay(make(seed=3), self.n_trials)
        strategy = make(seed=3)  # a fresh object, as after a restart
        head = full[: len(full) // 2]
        suggestion = strategy.suggest(SPACE, head, self.n_trials)
        assert suggestion is not None and suggestion.params == full[len(head)].params

    def test_stays_within_budget(self, make):
        assert len(replay(make(seed=0), 5)) <= 5

    def test_a_populations_trials_share_its_shape_parameters_and_stay_in_the_space(self, make):
        groups = replay_grouped(make(seed=0), self.n_trials, size=4)
        trials = [t for group in groups for t in group]
        assert len(trials) >= min(self.n_trials, 36) - 4
        assert all(SPACE.contains(t.params) for t in trials)
        assert all(len({t.params["batch_size"] for t in group}) == 1 for group in groups)
        assert sum(len(group) == 4 for group in groups) >= len(groups) // 2  # groups fill
        assert len({params_key(t.params) for t in trials}) == len(trials) or not isinstance(make(seed=0), GridStrategy)


def test_random_populations_keep_every_parameters_distribution():
    """A population draws its batch size once and the rest per trial: over many populations the
    batch size is log-uniform over the groups, and every other parameter over the trials."""
    from scipy import stats

    groups = replay_grouped(RandomStrategy(seed=0), 4000, size=8)
    sizes = np.log([group[0].params["batch_size"] for group in groups])
    assert stats.kstest((sizes - np.log(16)) / (np.log(257) - np.log(16)), "uniform").pvalue > 0.001
    lrs = np.log10([t.params["lr"] for group in groups for t in group])
    assert stats.kstest((lrs + 5) / 5, "uniform").pvalue > 0.001
    dropouts = [t.params["dropout"] for group in groups for t in group[1:]]
    counts = np.unique(np.round(dropouts, 1), return_counts=True)[1]
    expected = np.array([0.5, 1, 1, 1, 1, 0.5]) / 5 * len(dropouts)  # uniform, rounded to its step of 0.1
    assert len(counts) == 6 and stats.chisquare(counts, expected).pvalue > 0.001


class TestGridStrategy(StrategySuite):
    n_trials = 1000  # more than the grid: the strategy must stop by itself

    @pytest.fixture
    def make(self):
        return lambda seed: GridStrategy(seed=seed)

    def test_every_grid_point_exactly_once(self, make):
        trials = replay(make(seed=0), self.n_trials)
        keys = [params_key(t.params) for t in trials]
        assert len(keys) == len(set(keys))
        assert sorted(keys) == sorted(params_key(p) for p in SPACE.grid(3))
        # 4 lr x 3 dropout x 3 batch sizes x (sgd, adam, nesterov with its one momentum)
        assert len(trials) == 4 * 3 * 3 * 3

    def test_different_seeds_give_different_trials(self, make):
        first, second = replay(make(seed=1), self.n_trials), replay(make(seed=2), self.n_trials)
        assert [t.params for t in first] != [t.params for t in second]  # another order
        assert {params_key(t.params) for t in first} == {params_key(t.params) for t in second}

    def test_a_point_running_elsewhere_is_not_suggested_again(self, make):
        strategy = make(seed=0)
        first = strategy.suggest(SPACE, [], 10)
        running = TrialRecord(0, first.params, TrialState.RUNNING)
        assert strategy.suggest(SPACE, [running], 10).params != first.params


class TestRandomStrategy(StrategySuite):
    @pytest.fixture
    def make(self):
        return lambda seed: RandomStrategy(seed=seed)

    def test_uniform_on_the_log_scale(self, make):
        trials = replay(make(seed=0), 400)
        logs = np.log10([t.params["lr"] for t in trials])
        assert abs(np.median(logs) - (-2.5)) < 0.4  # the middle of 1e-5..1 in log space
        rng = np.random.default_rng(0)
        ints = [SPACE.params["batch_size"].sample(rng) for _ in range(5000)]
        assert min(ints) == 16 and max(ints) == 256  # both integer bounds are inclusive


class TestCoarseToFineStrategy(StrategySuite):
    @pytest.fixture
    def make(self):
        return lambda seed: CoarseToFineStrategy(seed=seed, stages=3)

    def test_budget_is_split_across_stages_and_each_trial_tagged(self, make):
        strategy = make(seed=0)
        budgets, _ = strategy.stage_budgets(SPACE, 36)
        trials = replay(strategy, 36)
        assert sum(budgets) == 36 and len(budgets) == 3
        assert [sum(t.stage == s for t in trials) for s in range(3)] == budgets

    def test_each_stage_contains_the_best_trials_of_the_stage_before(self, make):
        strategy = make(seed=0)
        trials = replay(strategy, 36)
        for stage in (1, 2):
            region = strategy.region(SPACE, trials, stage)
            previous = sorted((t for t in trials if t.stage == stage - 1), key=lambda t: t.value)
            for best in previous[:2]:
                assert region.contains(best.params), (stage, best.params)
            assert all(region.contains(t.params) for t in trials if t.stage == stage)

    def test_stages_narrow_in_log_space_and_move_toward_the_optimum(self, make):
        strategy = make(seed=0)
        trials = replay(strategy, 60)
        widths = []
        for stage in range(3):
            lr = strategy.region(SPACE, trials, stage).params["lr"]
            widths.append(math.log10(lr.high) - math.log10(lr.low))
        assert widths[0] > widths[1] > widths[2]
        best = [min((t for t in trials if t.stage == s), key=lambda t: t.value).value for s in range(3)]
        assert best[2] <= best[0]

    def test_a_best_trial_on_the_edge_widens_that_side_again(self):
        strategy = CoarseToFineStrategy(seed=0)
        space = SearchSpace.model_validate(
            {"name": "edge", "metric": "loss", "direction": "minimize",
             "params": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}}}
        )
        region = space.model_copy(update={"params": {"lr": space.params["lr"].model_copy(update={"low": 1e-4, "high": 1e-2})}})
        at_edge = [TrialRecord(i, {"lr": lr}, TrialState.COMPLETE, v) for i, (lr, v) in enumerate([(1e-2, 0.1), (5e-3, 0.2), (1e-3, 0.9), (1e-4, 1.0)])]
        narrowed = strategy.narrow(space, region, at_edge).params["lr"]
        assert narrowed.high > 1e-2  # widened beyond the previous region, toward the space's bound
        assert narrowed.low > 1e-4  # the other side still narrows
        assert narrowed.high <= 1.0

    def test_a_stage_waits_for_the_stage_before_to_finish(self, make):
        strategy = make(seed=0)
        trials = replay(strategy, 36)
        coarse = [t for t in trials if t.stage == 0]
        still_running = [*coarse[:-1], TrialRecord(coarse[-1].number, coarse[-1].params, TrialState.RUNNING)]
        assert strategy.suggest(SPACE, still_running, 36) is WAIT
        assert strategy.suggest(SPACE, coarse, 36).stage == 1

    def test_categorical_keeps_the_choices_of_the_best_trials(self, make):
        strategy = make(seed=0)
        trials = replay(strategy, 36)
        choices = strategy.region(SPACE, trials, 2).params["optimizer"]
        assert isinstance(choices, CategoricalParam) and "adam" in choices.choices

    def test_integer_regions_keep_integer_bounds(self, make):
        strategy = make(seed=0)
        region = strategy.region(SPACE, replay(strategy, 36), 2).params["batch_size"]
        assert isinstance(region, IntParam) and isinstance(region.low, int) and isinstance(region.high, int)

    def test_coarse_stage_is_the_grid_when_it_fits(self):
        space = SearchSpace.model_validate(
            {"name": "g", "metric": "loss", "direction": "minimize",
             "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid": [0.1, 0.01, 0.001, 0.0001]},
                        "dropout": {"type": "float", "low": 0.0, "high": 0.5}, "optimizer": {"type": "categorical", "choices": ["adam"]}}}
        )
        strategy = CoarseToFineStrategy(seed=0)
        budgets, use_grid = strategy.stage_budgets(space, 20)
        assert use_grid and budgets[0] == len(space.grid(3)) == 12
        coarse = [t for t in replay(strategy, 20, space) if t.stage == 0]
        assert sorted(params_key(t.params) for t in coarse) == sorted(params_key(p) for p in space.grid(3))


def test_model_based_strategies_are_delegated_to_the_engine():
    """TPE and GP are model-based: the trial store samples them with Optuna's sampler, so they
    have no engine-free ``suggest``; each has its sampler there."""
    from hpo.store._store import SAMPLERS

    sampled = [name for name, cls in STRATEGIES.items() if not issubclass(cls, BaseStrategy)]
    assert sampled == ["tpe", "gp"] == list(SAMPLERS)
    assert not isinstance(TpeStrategy(seed=0), BaseStrategy)


def _product_of_axes(space: SearchSpace, points: int = 3) -> set[str]:
    """The grid as the cartesian product of the axes, conditions applied: what ``Grid`` numbers."""
    import itertools

    axes = [param.grid_values(points) for param in space.params.values()]
    return {params_key(space.active(dict(zip(space.params, values, strict=True))))
            for values in itertools.product(*axes)}


def test_the_numbered_grid_is_the_product_of_the_axes_each_point_once():
    from hpo.spaces import Grid

    grid = Grid(SPACE, 3)
    points = [grid.point(i) for i in range(len(grid))]
    assert {params_key(p) for p in points} == _product_of_axes(SPACE) and len(points) == len(grid) == 108
    assert [grid.number(p) for p in points] == list(range(len(grid)))
    assert grid.number({"lr": 0.5, "dropout": 0.0, "batch_size": 16, "optimizer": "sgd"}) is None  # off the grid
    assert grid.number({"lr": points[0]["lr"]}) is None  # not a whole point


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100, 1000])
@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("in_memory", [True, False])
def test_the_seeded_shuffle_is_a_permutation_found_again_both_ways(size, seed, in_memory, monkeypatch):
    from hpo.spaces import Shuffle

    if not in_memory:  # the order of a grid too large to hold
        monkeypatch.setattr(Shuffle, "IN_MEMORY", 0)
    order = Shuffle(size, seed)
    shuffled = [order[k] for k in range(size)]
    assert sorted(shuffled) == list(range(size))
    assert [order.position(n) for n in shuffled] == list(range(size))
    if size >= 64:
        assert shuffled != sorted(shuffled) and shuffled != [order[k] for k in range(size)][::-1]
        assert shuffled != [Shuffle(size, seed + 1)[k] for k in range(size)]


def _spread(params: dict) -> float:
    return sum(math.log10(v) ** 2 for v in params.values())


def test_a_grid_of_a_trillion_points_plans_at_once_and_resumes_exactly_once():
    from hpo.spaces import Grid
    from hpo.trial import time_limit

    space = SearchSpace.model_validate({
        "name": "huge", "metric": "loss", "direction": "minimize",
        "params": {f"p{i}": {"type": "float", "low": 1e-6, "high": 1.0, "log": True, "grid_points": 100}
                   for i in range(6)},
    })
    with time_limit(60):  # materialising the product (the old planner) never ends
        assert len(Grid(space)) == 10**12
        first = replay(CoarseToFineStrategy(seed=0), 30, space=space, loss=_spread)
        again = replay(GridStrategy(seed=0, points=3), 40, space=space, loss=_spread)
    assert len({params_key(t.params) for t in again}) == 40
    assert [t.stage for t in first][:10] == [0] * 10
    # a point lost earlier (not in the history) is suggested again before any new one
    grid = GridStrategy(seed=0, points=3)
    history = replay(grid, 5, space=space, loss=_spread)
    lost = history.pop(2)
    assert grid.suggest(space, history, 100).params == lost.params
