"""The study as Optuna's pruners see it from the trial store, kept cheap as the study grows.

Optuna's pruners read the study at every report a trial makes: the median rule takes every
complete trial's value at the reported step, and its SQL storage reads trials by loading each
one's rows lazily. At 3000 trials of a population search these reads were a third of hpo's
bookkeeping, and grew with the study. Here complete trials are read again only when they may
have changed, each step's median is computed once per such read, and a claimed trial's handle
is made from what the claim already knows.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.pruners._percentile import (
    _get_best_intermediate_result_over_steps,
    _get_percentile_intermediate_result_over_trials,
    _is_first_in_interval_step,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState


class StageStudy(optuna.Study):
    """The study as a pruner sees it when it judges a trial of one coarse-to-fine stage: the
    trials that are ``of_stage`` (all of them where it is None). Median and successive
    halving read the study through ``get_trials``; Hyperband splits it into brackets of its own.

    Complete trials never change, so they are read again only when ``version()`` has changed:
    when this process has ended a trial, or at most every ``REFRESH_S`` seconds (for what other
    processes end). In one process the view is always exact. What is computed from them
    (``percentile_at``) is kept until they are read again."""

    REFRESH_S = 2.0

    def __init__(self, study_name: str, storage: HeldReports, pruner: optuna.pruners.BasePruner,
                 of_stage: Callable[[FrozenTrial], bool] | None, version: Callable[[], int]) -> None:
        super().__init__(study_name=study_name, storage=storage, pruner=pruner)
        self._held = storage
        self._in_stage = of_stage
        self._version = version
        self._complete: tuple[tuple[int, float], list[FrozenTrial]] | None = None
        self._percentiles: dict[tuple[int, float, int], tuple[float, int]] = {}
        self._direction: StudyDirection | None = None

    @property
    def direction(self) -> StudyDirection:
        if self._direction is None:  # the study's, which never changes: read once
            self._direction = super().direction
        return self._direction

    def handle(self, started: FrozenTrial) -> optuna.Trial:
        """Optuna's handle for a trial just claimed, made from what the claim knows of it
        (``started``): Optuna's would read the trial back from the storage."""
        self._held.started[started._trial_id] = started
        return optuna.Trial(self, started._trial_id)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        if states is None or tuple(states) != (OptunaState.COMPLETE,):
            return self._of_stage(super().get_trials(deepcopy=deepcopy, states=states))
        return copy.deepcopy(self.complete()) if deepcopy else list(self.complete())

    def complete(self) -> list[FrozenTrial]:
        """The complete trials of the stage, as last read (not to be changed)."""
        version = (self._version(), time.monotonic() // self.REFRESH_S)
        if self._complete is None or self._complete[0] != version:
            trials = super().get_trials(deepcopy=False, states=(OptunaState.COMPLETE,))
            self._complete = version, self._of_stage(trials)
            self._percentiles = {}
        return self._complete[1]

    def percentile_at(self, step: int, percentile: float, n_min_trials: int) -> tuple[float, int]:
        """Optuna's percentile rule's threshold at ``step`` over the complete trials (NaN
        below ``n_min_trials`` values), and how many of them reported that step."""
        complete = self.complete()
        key = (step, percentile, n_min_trials)
        if key not in self._percentiles:
            found = _get_percentile_intermediate_result_over_trials(complete, self.direction, step, percentile,
                                                                    n_min_trials)
            self._percentiles[key] = found, sum(step in t.intermediate_values for t in complete)
        return self._percentiles[key]

    def _of_stage(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        keep = self._in_stage
        return trials if keep is None else [t for t in trials if keep(t)]


class MedianRule(optuna.pruners.MedianPruner):
    """Optuna's median rule, deciding exactly as it does, with each step's median taken from
    the study view (``StageStudy.percentile_at``: once per read of the complete trials) rather
    than computed over every complete trial at every report."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if not isinstance(study, StageStudy):
            return super().prune(study, trial)
        step = trial.last_step
        if (len(study.complete()) < max(1, self._n_startup_trials) or step is None or step < self._n_warmup_steps
                or not _is_first_in_interval_step(step, trial.intermediate_values.keys(), self._n_warmup_steps,
                                                  self._interval_steps)):
            return False
        best = _get_best_intermediate_result_over_steps(trial, study.direction)
        if math.isnan(best):
            return True
        threshold, _ = study.percentile_at(step, self._percentile, self._n_min_trials)
        if math.isnan(threshold):
            return False
        return best < threshold if study.direction == StudyDirection.MAXIMIZE else best > threshold


class HeldReports:
    """A study's storage whose intermediate values go to the store's ``report`` (held back and
    written together), and which knows the trials just claimed (``started``) without reading
    them; everything else is the storage's own."""

    def __init__(self, storage: optuna.storages.BaseStorage, report: Callable[[int, int, float], None]) -> None:
        self._storage = storage
        self._report = report
        self.started: dict[int, FrozenTrial] = {}

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._report(trial_id, step, intermediate_value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        started = self.started.pop(trial_id, None)
        return started if started is not None else self._storage.get_trial(trial_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)
