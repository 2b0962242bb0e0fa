"""What a search tells the one watching it (the CLI's progress bar, a notebook)."""

from __future__ import annotations

from hpo.trial import TrialRecord


class SearchListener:
    """Hears how a search goes; every method is optional."""

    def resumed(self, trials: list[TrialRecord]) -> None:
        """The trials already in the study when the search starts."""

    def running(self, numbers: list[int]) -> None:
        """These trials (a population's members, or one) start running now, in this process."""

    def trial_finished(self, trial: TrialRecord) -> None:
        """A trial of this run has ended, whatever its state."""

    def ended_elsewhere(self, trials: list[TrialRecord]) -> None:
        """These trials of this run of the search ended in a process it did not start (``hpo
        worker``, another machine), as it learnt of them (at its next claim, or a look while
        its trials run)."""

    def notice(self, text: str) -> None:
        """Something the user should know (a store repaired)."""


POPULATION_NOTICE = "population "
"""How a notice about the search's populations begins (``population of 8, not 32: ...``)."""


class Listeners(SearchListener):
    """Several listeners hearing the same search, in order (the progress bar, then the user's)."""

    def __init__(self, *listeners: SearchListener) -> None:
        self.listeners = listeners

    def resumed(self, trials: list[TrialRecord]) -> None:
        for listener in self.listeners:
            listener.resumed(trials)

    def running(self, numbers: list[int]) -> None:
        for listener in self.listeners:
            listener.running(numbers)

    def trial_finished(self, trial: TrialRecord) -> None:
        for listener in self.listeners:
            listener.trial_finished(trial)

    def ended_elsewhere(self, trials: list[TrialRecord]) -> None:
        for listener in self.listeners:
            listener.ended_elsewhere(trials)

    def notice(self, text: str) -> None:
        for listener in self.listeners:
            listener.notice(text)
