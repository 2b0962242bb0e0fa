"""The study in this process's memory, where Optuna's TPE samples a claim's trials: read from
the stored study by what changed since the last claim, not copied whole each time."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState


class StudyMirror:
    """The stored study's trials but those waiting, in the order they were created (TPE weighs
    trials by it), with the trials sampled here added as running (TPE's constant liar) until the
    stored study says how they ended.

    Each claim, under the study's lock, ``follow``s the stored trials, samples with ``ask``, and
    once its trials are created, ``created`` maps them to the stored ones; where that fails,
    the mirror is dropped and made again from the stored study."""

    def __init__(self, directions: Sequence[optuna.study.StudyDirection]) -> None:
        self.storage = optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(storage=self.storage, directions=list(directions))
        self._study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self._here: dict[int, tuple[int, OptunaState]] = {}  # stored trial number -> (trial id here, its state)
        self._asked: list[int] = []  # ids here of the trials sampled since the last ``created``

    def follow(self, trials: Sequence[FrozenTrial]) -> None:
        """Add the stored ``trials`` not seen yet, and end here those that have ended there."""
        for trial in trials:
            if trial.state is OptunaState.WAITING:
                continue
            seen = self._here.get(trial.number)
            if seen is None:
                here = self.storage.create_new_trial(self._study_id, template_trial=trial)
                self._here[trial.number] = here, trial.state
            elif seen[1] is not trial.state:
                here = seen[0]
                for step, value in trial.intermediate_values.items():
                    self.storage.set_trial_intermediate_value(here, step, value)
                self.storage.set_trial_state_values(here, trial.state, trial.values)
                self._here[trial.number] = here, trial.state

    def ask(self, sampler: optuna.samplers.BaseSampler) -> optuna.Trial:
        """A trial of the mirror, sampled by ``sampler``, running here from now on."""
        self.study.sampler = sampler
        trial = self.study.ask()
        self._asked.append(self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number))
        return trial

    def created(self, numbers: Sequence[int]) -> None:
        """The trials asked since the last call were created in the stored study with ``numbers``."""
        for number, here in zip(numbers, self._asked, strict=True):
            self._here[number] = here, OptunaState.RUNNING
        self._asked = []
