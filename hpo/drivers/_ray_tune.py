"""Tune's searcher and callback for the Ray driver, imported only once Ray is set up.

Both live in the driver process and hold its ``_RayStudy``; Tune pickles them with its
experiment state, so they leave the study (locks, database clients) out of what it pickles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from ray.tune.search import Searcher

from hpo.strategies import BaseStrategy

if TYPE_CHECKING:
    from hpo._search import SearchPlan
    from hpo.drivers._ray import _RayStudy


class _DriverSide:
    """Keeps ``study`` out of Tune's pickles: it only means something in this process."""

    study: _RayStudy

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("study", "inner")}


class StrategySearcher(_DriverSide, Searcher):
    """Tune's searcher over hpo's plan: the strategy decides, or Optuna's TPE inside Tune."""

    def __init__(self, study: _RayStudy) -> None:
        plan = study.plan
        super().__init__(metric=plan.space.metric, mode=plan.space.direction[:3])
        self.study = study
        self.inner = None if isinstance(plan.strategy, BaseStrategy) else tpe_searcher(plan)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        params = None
        if self.inner is not None:
            if len(self.study.history) + len(self.study.live) >= self.study.plan.n_trials:
                return Searcher.FINISHED
            params = self.inner.suggest(trial_id)
        return self.study.plan_next(trial_id, params)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.inner is not None:
            metric = self.study.plan.space.metric
            self.inner.on_trial_complete(trial_id, result if result and metric in result else None, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the trial journal is the state, and resuming reads it."""

    def restore(self, checkpoint_path: str) -> None:
        """See ``save``."""


def tpe_searcher(plan: SearchPlan) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from hpo.drivers._optuna import suggest

    def define_by_run(otrial: optuna.Trial) -> None:
        suggest(otrial, plan.space)

    return OptunaSearch(space=define_by_run, metric=plan.space.metric, mode=plan.space.direction[:3],
                        sampler=optuna.samplers.TPESampler(seed=plan.seed))


class TrackingCallback(_DriverSide, Callback):
    """Writes each trial to MLflow from the driver, as the Optuna driver does."""

    def __init__(self, study: _RayStudy) -> None:
        self.study = study

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.study.live and trial.trial_id not in self.study.runs:
            self.study.started(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.study.reported(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.study.ended(trial.trial_id, trial.last_result, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.study.ended(trial.trial_id, trial.last_result, getattr(trial, "error_msg", None) or "worker lost")
