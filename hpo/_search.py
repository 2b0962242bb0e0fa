"""``hpo.search``: validate everything, run the driver through the trial loop, record the
result, test the best once. Engines, Optuna and MLflow are imported only once the search is
known to be valid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError
from hpo._listener import SearchListener
from hpo._objectives import resolve_objective
from hpo._plan import SearchPlan, SearchResult, pruning_for
from hpo._trial import Trial, TrialRecord, trial_seed
from hpo.drivers import Driver, DriverOptions, driver_options
from hpo.spaces import Pruning, SearchSpace, load_space, resolve_space_path
from hpo.strategies import Strategy, make_strategy

if TYPE_CHECKING:
    from hpo.store import TrialStore
    from hpo.tracking import MlflowTracker

DEFAULT_SPACE = "lr_wd"
DEFAULT_STRATEGY = "coarse-to-fine"
DEFAULT_TRIALS = 40
DEFAULT_POPULATION = "auto"
"""The defaults of both ``hpo search`` and ``hpo.search``."""


@dataclass(frozen=True)
class PreparedSearch:
    """A validated search, ready to run: nothing has been written anywhere yet."""

    plan: SearchPlan
    objective: Callable[..., Any]
    driver: Driver
    store: TrialStore
    tracker: MlflowTracker
    space_path: Path | None
    evaluate_test: bool
    population: int | str = DEFAULT_POPULATION

    def run(self, listener: SearchListener | None = None) -> SearchResult:
        from hpo.loop import TrialLoop

        plan, store, tracker = self.plan, self.store, self.tracker
        listener = listener or SearchListener()
        store.check(plan)
        tracker.start_search(plan, self.space_path)
        try:
            store.open(plan, tracker.identity())
            loop = TrialLoop(plan, store, tracker)
            listener.resumed(store.counted())
            self.driver.run(loop, self.objective, listener, self.population)
            trials = store.counted()
        except BaseException:
            tracker.abort_search()
            raise
        result = SearchResult(plan.space, trials, plan.study_name, tracker.tracking_uri, tracker.experiment_id,
                              tracker.parent_run_id)
        if self.evaluate_test and result.best is not None and hasattr(self.objective, "test"):
            result.test_metrics = _test_once(self.objective, result.best, tracker, plan, self.driver.device)
        tracker.finish_search(result)
        return result


def prepare(
    objective: str | Callable[..., Any] | None = None,
    space: str | Path | SearchSpace = DEFAULT_SPACE,
    *,
    strategy: str | Strategy = DEFAULT_STRATEGY,
    n_trials: int = DEFAULT_TRIALS,
    driver: str | DriverOptions = "optuna",
    pruner: str | Pruning = "none",
    warmup_steps: int | None = None,
    warmup_trials: int | None = None,
    seed: int = 0,
    storage: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    study_name: str | None = None,
    divergence_guard: bool = True,
    evaluate_test: bool = True,
    home: str | Path = ".hpo",
    population: int | str = DEFAULT_POPULATION,
) -> PreparedSearch:
    """Check everything a user can get wrong, before anything is written; see ``search``."""
    home = Path(home)
    space_path = None
    if not isinstance(space, SearchSpace):
        space_path = resolve_space_path(space)
        space = load_space(space_path)
    options = driver_options(driver)
    planner = make_strategy(strategy, seed)
    function, objective_name = resolve_objective(objective, space.objective)
    check_population(population, options, function, objective_name)
    plan = SearchPlan(
        space=space,
        strategy=planner,
        n_trials=n_trials,
        study_name=study_name or f"{space.name}-{objective_name.rpartition(':')[2]}-{planner.name}-seed{seed}",
        objective_name=objective_name,
        driver_name=options.name,
        pruning=pruning_for(space, pruner, warmup_steps, warmup_trials),
        seed=seed,
        divergence_guard=divergence_guard,
    )
    engine = options.make(home)
    from hpo.store import TrialStore, default_storage_url
    from hpo.tracking import MlflowTracker

    return PreparedSearch(
        plan=plan,
        objective=function,
        driver=engine,
        store=TrialStore(storage or default_storage_url(home), plan.study_name),
        tracker=MlflowTracker(tracking_uri, experiment or space.name, home=home),
        space_path=space_path,
        evaluate_test=evaluate_test,
        population=population,
    )


def check_population(population: int | str, options: DriverOptions, objective: Any, objective_name: str) -> None:
    """A population size the engine and the objective can honour: a number, or ``"auto"``."""
    if population == "auto":
        return
    try:
        size = int(population)
    except (TypeError, ValueError):
        raise HpoError(f"--population: expected a number or 'auto', got {population!r}") from None
    if size < 1:
        raise HpoError(f"--population: must be at least 1, got {size}")
    if size > 1 and not options.populations:
        raise HpoError(f"--population: the {options.name} driver trains one trial per worker; "
                       "populations train on the optuna driver")
    if size > 1 and not hasattr(objective, "population"):
        raise HpoError(f"--population: objective {objective_name!r} cannot train populations (it has no "
                       "population(params, trial) method); --population auto trains it one trial at a time")


def search(
    objective: str | Callable[..., Any] | None = None,
    space: str | Path | SearchSpace = DEFAULT_SPACE,
    *,
    listener: SearchListener | None = None,
    **options: Any,
) -> SearchResult:
    """Search ``space`` for the best configuration of ``objective``; resumes a known study.

    Args:
        objective: ``f(params, trial)`` returning the metric (or a dict holding it); a
            built-in name; ``"module:function"``; or ``None`` for the space's default.
        space: A space name (``"lr_wd"``), a YAML path, or a ``SearchSpace``.
        strategy: ``grid``, ``random``, ``coarse-to-fine`` (default) or ``tpe``, or a strategy.
        n_trials: Trials in the study in all (40); a rerun adds only what is missing.
        driver: ``"optuna"`` (default) or ``"ray"``, or the engine's options:
            ``hpo.OptunaOptions(workers=4)``, ``hpo.RayOptions(gpus_per_trial=0.25)``.
        pruner: ``none``, ``median``, ``successive-halving`` or ``hyperband`` (with the space's
            warm-up), or a ``hpo.Pruning``.
        warmup_steps: Reports before a pruner judges a trial [the space's; a fifth of its epochs].
        warmup_trials: Finished trials the median rule needs first [the space's; 5].
        seed: Seeds the strategy and, through it, every trial.
        storage: The trial store, an Optuna storage URL; ``.hpo/optuna.db`` by default.
        tracking_uri: MLflow tracking URI; ``.hpo/mlflow.db`` by default.
        experiment: MLflow experiment; the space's name by default.
        study_name: Names the study; a search with the same name resumes it.
        divergence_guard: End a trial whose loss turns NaN or explodes (pruned, "diverged").
        evaluate_test: Score the best configuration once with the objective's ``test``.
        home: The folder of the default stores (``.hpo``).
        population: Trials trained together as one stacked model, where the objective offers
            it (``population(params, trial)``, as the built-in ones do); ``"auto"`` (default)
            picks the size from the device, or one at a time for an objective that does not
            (and on the Ray driver); ``1``: one at a time.
        listener: Hears of each finished trial (a progress bar).

    Example:
        >>> def objective(params, trial):
        ...     for step in range(10):
        ...         trial.report(step, loss=(params["lr"] - 0.01) ** 2 / (step + 1))
        ...     return (params["lr"] - 0.01) ** 2
        >>> result = hpo.search(objective, "lr_wd", n_trials=5)  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
    """
    return prepare(objective, space, **options).run(listener)


def join(
    study_name: str,
    storage: str,
    *,
    driver: str | DriverOptions = "optuna",
    population: int | str = DEFAULT_POPULATION,
    listener: SearchListener | None = None,
) -> int:
    """Join a running search from another machine: claim and run trials of ``study_name`` in
    ``storage``, with the plan saved there, until its budget is claimed. Returns how many
    trials this call ran."""
    from hpo.drivers.optuna import OptunaOptions
    from hpo.drivers.optuna._driver import OptunaDriver
    from hpo.loop import TrialLoop
    from hpo.store import TrialStore
    from hpo.tracking import MlflowTracker

    options = driver_options(driver)
    if not isinstance(options, OptunaOptions):
        raise HpoError("--driver: joining a search runs its trials with the Optuna engine")
    engine = OptunaDriver(options)
    store = TrialStore(storage, study_name)
    if not store.exists():
        raise HpoError(f"--study: no study {study_name!r} in {storage}")
    saved_plan, tracking = store.saved()
    plan = SearchPlan.from_json(saved_plan)
    objective, _ = resolve_objective(plan.objective_name, None)
    check_population(population, options, objective, plan.objective_name)
    counter = _Counting(listener or SearchListener())
    tracker = MlflowTracker.attach(tracking)
    try:
        engine.join(TrialLoop(plan, store, tracker), objective, counter, population)
    finally:
        tracker.flush()
    return counter.count


def _test_once(function: Any, best: TrialRecord, tracker: MlflowTracker, plan: SearchPlan,
               device: str) -> dict[str, float]:
    """The test-set score of the best configuration, computed once per best trial, retrained
    with its seed on the kind of device its trial ran on."""
    from hpo.dispatch import usable_device

    known = tracker.tested_trial()
    if known is not None and known[0] == best.number:
        return known[1]
    trial = Trial(best.number, seed=trial_seed(plan.seed, best.number), device=usable_device(device))
    scores = {k: float(v) for k, v in function.test({**plan.space.fixed, **best.params}, trial).items()}
    tracker.record_test(best.number)
    return scores


class _Counting(SearchListener):
    def __init__(self, inner: SearchListener) -> None:
        self.inner, self.count = inner, 0

    def trial_finished(self, trial: TrialRecord) -> None:
        self.count += 1
        self.inner.trial_finished(trial)
