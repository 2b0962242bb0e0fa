"""Tune's searcher, callback and stopper for the Ray driver, imported only once Ray is set up.

All three live in the driver process and hold its ``RayStudy``; Tune pickles them with its
experiment state, so they leave the study (locks, database clients) out of what it pickles.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import cloudpickle
from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

if TYPE_CHECKING:
    from hpo.drivers.ray._driver import RayStudy


class _DriverSide:
    """Keeps ``study`` out of Tune's pickles: it only means something in this process."""

    study: RayStudy

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "study"}


class StrategySearcher(_DriverSide, Searcher):
    """Tune's searcher over the trial store: each suggestion is a trial claimed there."""

    def __init__(self, study: RayStudy) -> None:
        plan = study.loop.plan
        super().__init__(metric=plan.space.metric, mode=plan.space.direction[:3])
        self.study = study

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        return self.study.suggest(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The callback finishes trials: it sees the trial's error, which this hook does not."""

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the trial store is the state, and resuming reads it."""

    def restore(self, checkpoint_path: str) -> None:
        """See ``save``."""


class TrackingCallback(_DriverSide, Callback):
    """Logs each report to the trial's MLflow run, and finishes the trial when it ends."""

    def __init__(self, study: RayStudy) -> None:
        self.study = study

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.study.reported(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.study.ended(trial.trial_id, trial.last_result, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.study.ended(trial.trial_id, trial.last_result, error_of(trial))


def error_of(trial: Any) -> BaseException:
    """The error a trial ended with, as Tune wrote it beside the trial just before calling
    ``on_trial_error`` (its ``get_pickled_error`` reads the copy synced to storage later)."""
    if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
        with open(trial.pickled_error_file, "rb") as file:
            return cloudpickle.load(file)
    if trial.error_file and os.path.exists(trial.error_file):
        with open(trial.error_file) as file:
            return RuntimeError(file.read().strip().splitlines()[-1])
    return RuntimeError("the trial failed and Tune kept no error")


class FatalErrorStopper(_DriverSide, Stopper):
    """Stops the whole experiment once an error every trial would meet (a failing setup) is seen."""

    def __init__(self, study: RayStudy) -> None:
        self.study = study

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.study.fatal is not None
