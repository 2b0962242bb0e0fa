"""``hpo.search``: validate everything, run the driver, record the result, test the best once."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo._errors import HpoError
from hpo._objectives import resolve_objective
from hpo._trial import Trial, TrialRecord, TrialState, trial_seed
from hpo.dispatch import plan_slots
from hpo.dispatch._slots import usable_device
from hpo.drivers import PRUNERS, BaseDriver, OptunaDriver, SearchListener
from hpo.spaces import SearchSpace, load_space, resolve_space_path
from hpo.strategies import BaseStrategy, EngineStrategy, make_strategy
from hpo.tracking import MlflowTracker

DRIVERS = ("optuna", "ray")


@dataclass(frozen=True)
class SearchPlan:
    """Everything a driver needs to know about what to search, validated up front."""

    space: SearchSpace
    strategy: BaseStrategy | EngineStrategy
    n_trials: int
    study_name: str
    objective_name: str
    driver_name: str = "optuna"
    pruner: str = "none"
    seed: int = 0
    divergence_guard: bool = True

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise HpoError(f"--trials: must be at least 1, got {self.n_trials}")
        if self.pruner not in PRUNERS:
            raise HpoError(f"--pruner: unknown pruner {self.pruner!r} (choose from {', '.join(PRUNERS)})")

    @property
    def strategy_name(self) -> str:
        return self.strategy.name


@dataclass
class SearchResult:
    """The trials of a search's budget, its best one, and the best one's test score.

    A trial lost with its process (or to Ctrl-C) is in MLflow, failed, but not here: its
    configuration ran again, and that retry is.
    """

    space: SearchSpace
    trials: list[TrialRecord]
    study_name: str
    tracking_uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.space.metric

    @property
    def best(self) -> TrialRecord | None:
        complete = [t for t in self.trials if t.state is TrialState.COMPLETE and t.value is not None]
        if not complete:
            return None
        sign = 1 if self.space.direction == "minimize" else -1
        return min(complete, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]

    @property
    def best_params(self) -> dict[str, Any]:
        return {**self.space.fixed, **self.best.params} if self.best else {}

    @property
    def best_value(self) -> float:
        return self.best.value if self.best and self.best.value is not None else math.nan

    def count(self, state: TrialState) -> int:
        return sum(t.state is state for t in self.trials)


@dataclass(frozen=True)
class PreparedSearch:
    """A validated search, ready to run: nothing has been written anywhere yet."""

    plan: SearchPlan
    objective: Callable[..., Any]
    driver: BaseDriver
    tracker: MlflowTracker
    space_path: Path | None
    evaluate_test: bool

    def run(self, listener: SearchListener | None = None) -> SearchResult:
        plan, tracker = self.plan, self.tracker
        self.driver.check(plan)
        tracker.start_search(plan, self.space_path)
        result = SearchResult(
            plan.space, [], plan.study_name, tracker.tracking_uri, tracker.experiment_id, tracker.parent_run_id
        )
        try:
            result.trials = self.driver.run(plan, self.objective, tracker, listener or SearchListener())
        except BaseException:
            tracker.abort_search()
            raise
        if self.evaluate_test and result.best is not None and hasattr(self.objective, "test"):
            result.test_metrics = _test_once(self.objective, result.best, tracker, plan, self.driver.device)
        tracker.finish_search(result)
        return result


def prepare(
    objective: str | Callable[..., Any] | None = None,
    space: str | Path | SearchSpace = "lr_wd",
    *,
    strategy: str | BaseStrategy | EngineStrategy = "random",
    driver: str = "optuna",
    n_trials: int = 20,
    pruner: str = "none",
    seed: int = 0,
    storage: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    study_name: str | None = None,
    divergence_guard: bool = True,
    evaluate_test: bool = True,
    home: str | Path = ".hpo",
    workers: str | int = "auto",
    gpus: str | None = None,
    trials_per_gpu: int = 1,
    ray_address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
) -> PreparedSearch:
    """Check everything a user can get wrong, before anything is written; see ``search``."""
    home = Path(home)
    space_path = None
    if not isinstance(space, SearchSpace):
        space_path = resolve_space_path(space)
        space = load_space(space_path)
    function, objective_name = resolve_objective(objective, space.objective)
    planner = make_strategy(strategy, seed)
    plan = SearchPlan(
        space=space,
        strategy=planner,
        n_trials=n_trials,
        study_name=study_name or f"{space.name}-{objective_name.rpartition(':')[2]}-{planner.name}-seed{seed}",
        objective_name=objective_name,
        driver_name=driver,
        pruner=pruner,
        seed=seed,
        divergence_guard=divergence_guard,
    )
    return PreparedSearch(
        plan=plan,
        objective=function,
        driver=make_driver(driver, storage=storage, home=home, workers=workers, gpus=gpus,
                           trials_per_gpu=trials_per_gpu, ray_address=ray_address,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial),
        tracker=MlflowTracker(tracking_uri, experiment or space.name, home=home),
        space_path=space_path,
        evaluate_test=evaluate_test,
    )


def search(
    objective: str | Callable[..., Any] | None = None,
    space: str | Path | SearchSpace = "lr_wd",
    *,
    listener: SearchListener | None = None,
    **options: Any,
) -> SearchResult:
    """Search ``space`` for the best configuration of ``objective``; resumes a known study.

    Args:
        objective: ``f(params, trial)`` returning the metric (or a dict holding it); a
            built-in name; ``"module:function"``; or ``None`` for the space's default.
        space: A space name (``"lr_wd"``), a YAML path, or a ``SearchSpace``.
        strategy: ``grid``, ``random``, ``coarse-to-fine`` or ``tpe``.
        driver: ``optuna`` or ``ray``.
        n_trials: Trials in the study in all; a rerun adds only what is missing.
        pruner: ``none``, ``median``, ``successive-halving`` or ``hyperband``.
        seed: Seeds the strategy and, through it, every trial.
        storage: Optuna storage URL; ``.hpo/optuna.db`` by default.
        tracking_uri: MLflow tracking URI; ``.hpo/mlflow.db`` by default.
        experiment: MLflow experiment; the space's name by default.
        study_name: Names the study; a search with the same name resumes it.
        divergence_guard: End a trial whose loss turns NaN or explodes (pruned, "diverged").
        evaluate_test: Score the best configuration once with the objective's ``test``.
        workers: Optuna driver: worker processes, or ``"auto"`` (one per GPU slot; half the
            cores on a CPU-only machine). Each is pinned to a device slot and stays warm.
        gpus: Optuna driver: ``"all"`` (default when there are GPUs), ``"none"``, or ids ``"0,1"``.
        trials_per_gpu: Optuna driver: worker slots per GPU, for small models.
        ray_address: An existing Ray cluster for the Ray driver; a local instance by default.
        cpus_per_trial, gpus_per_trial: Ray resources per trial (0.25 GPU packs four a GPU).
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


def make_driver(name: str, *, storage: str | None, home: Path, workers: str | int = "auto", gpus: str | None = None,
                trials_per_gpu: int = 1, ray_address: str | None = None, cpus_per_trial: float = 1.0,
                gpus_per_trial: float = 0.0) -> BaseDriver:
    if name == "optuna":
        return OptunaDriver(storage, home=home, slots=plan_slots(workers, gpus, trials_per_gpu))
    if name == "ray":
        if storage is not None:
            raise HpoError("--storage: the Ray driver keeps its trial journal under .hpo/ray; drop --storage")
        if workers != "auto" or gpus is not None:
            raise HpoError("--workers/--gpus: the Ray driver places trials by --cpus-per-trial and --gpus-per-trial")
        from hpo.drivers._ray import RayDriver

        return RayDriver(address=ray_address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, home=home)
    raise HpoError(f"--driver: unknown driver {name!r} (choose from {', '.join(DRIVERS)})")


def _test_once(function: Any, best: TrialRecord, tracker: MlflowTracker, plan: SearchPlan,
               device: str) -> dict[str, float]:
    """The test-set score of the best configuration, computed once per best trial, retrained
    with its seed on the kind of device its trial ran on."""
    known = tracker.tested_trial()
    if known is not None and known[0] == best.number:
        return known[1]
    trial = Trial(best.number, seed=trial_seed(plan.seed, best.number), device=usable_device(device))
    scores = {k: float(v) for k, v in function.test({**plan.space.fixed, **best.params}, trial).items()}
    tracker.record_test(best.number)
    return scores


def join(
    study_name: str,
    storage: str,
    *,
    workers: str | int = "auto",
    gpus: str | None = None,
    trials_per_gpu: int = 1,
    listener: SearchListener | None = None,
) -> int:
    """Join a running search from another machine: claim and run trials of ``study_name`` in
    ``storage`` until its budget is claimed. Returns how many trials this call ran."""
    import optuna

    from hpo.drivers._optuna import PLAN

    driver = OptunaDriver(storage, slots=plan_slots(workers, gpus, trials_per_gpu))
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise HpoError(f"--study: no study {study_name!r} in {storage}") from None
    stored = study.user_attrs.get(PLAN)
    if stored is None:
        raise HpoError(f"--study: {study_name!r} was not started by hpo search")
    objective, objective_name = resolve_objective(stored["objective"], None)
    plan = SearchPlan(
        space=SearchSpace.model_validate(stored["space"]), strategy=make_strategy(stored["strategy"], stored["seed"]),
        n_trials=stored["n_trials"], study_name=study_name, objective_name=objective_name, pruner=stored["pruner"],
        seed=stored["seed"], divergence_guard=stored["divergence_guard"],
    )
    tracker = MlflowTracker(stored["tracking_uri"], stored["experiment"])
    tracker.attach(stored["experiment_id"], stored["parent_run_id"])
    counter = _Counting(listener or SearchListener())
    driver.join(plan, objective, tracker, counter)
    return counter.count


class _Counting(SearchListener):
    def __init__(self, inner: SearchListener) -> None:
        self.inner, self.count = inner, 0

    def trial_finished(self, trial: TrialRecord) -> None:
        self.count += 1
        self.inner.trial_finished(trial)
