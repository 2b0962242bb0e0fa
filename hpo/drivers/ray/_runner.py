"""What runs in a Ray actor: the trials the driver claimed for it, one after another or as one
population, in a thread of their own, while the driver's calls to ``exchange`` carry new trials,
pruning decisions and a population's refills in and stream reports, questions and endings out.

Kept apart from the driver so that an actor imports neither MLflow nor the trial store (Optuna,
SQLAlchemy): a fresh actor took three seconds importing them before its first trial."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpo._errors import HpoError
from hpo.dispatch import Printed, send_printed, usable_device
from hpo.loop import SearchListener, make_trial, population_size, population_tags, run_population, run_trial, set_up
from hpo.plan import SearchPlan
from hpo.pruning import Rule, make_pruner
from hpo.trial import Claim, Trial, TrialPruned


@dataclass(frozen=True)
class Reported:
    """A trial reported ``values`` at ``step``."""

    number: int
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class Asked:
    """A trial waits for the pruner's decision on its report at ``step``."""

    number: int
    step: int


@dataclass(frozen=True)
class Wanted:
    """A population wants up to ``count`` trials of its group (``like``) for the rows that emptied."""

    count: int
    like: dict[str, Any]
    number: int = -1


@dataclass(frozen=True)
class Ended:
    """A trial ended: its record, as ``TrialRecord.to_json`` writes it, and its MLflow tags."""

    number: int
    record: dict[str, Any]
    tags: dict[str, str] | None = None


Event = Reported | Asked | Wanted | Ended | Printed
Verdict = tuple[str, str] | None
"""A pruning decision as it travels: the rule's name and what it saw, or None to go on."""


class TrialRunner:
    """One actor's trials. ``setup`` runs the objective's setup once and sizes its populations;
    ``exchange`` hands over claimed trials, decisions and refills and returns what happened
    since the last call, waiting up to ``wait_s`` for something the driver must answer or
    finish (reports alone are gathered)."""

    def __init__(self, plan: SearchPlan, objective: list[Any], device: str, path: list[str]) -> None:
        """``objective``: its object ref, in a list so that Ray leaves it to this actor to fetch
        once the search's ``path`` (where the objective's own modules are: its file's folder)
        is on this process's."""
        import ray

        sys.path[:0] = [folder for folder in path if folder not in sys.path]
        self.plan = plan
        self.objective: Callable[..., Any] = ray.get(objective[0])
        self.device = usable_device(device)
        self.node = ray.get_runtime_context().get_node_id()
        self._context: Any = None
        self._changed = threading.Condition()
        self._events: list[Event] = []
        self._urgent = False  # an event waits for an answer, or a trial ended
        send_printed(self._say)  # Ray keeps an actor's prints from the driver
        self._todo: list[list[Claim]] = []
        self._verdicts: dict[tuple[int, int], Verdict] = {}
        self._granted: list[Claim] | None = None
        self._thread = threading.Thread(target=self._work, name="hpo-trials", daemon=True)
        pruner = make_pruner(plan.pruning, plan.space, plan.study_name)
        self._rule = pruner.rule if pruner is not None else None
        """The search's pruning rule, to ask the driver only about reports it may stop a trial on."""

    def ready(self) -> str:
        """The node this actor was placed on, once it is."""
        return self.node

    def setup(self, population: int | str) -> tuple[HpoError | None, int, list[str]]:
        """Run the objective's setup here; its failure (which ends the search), or how many
        trials this actor trains at once, and the notices that says."""
        notices = _Notices()
        try:
            self._context = set_up(self.objective, self.device)
            size = population_size(population, self.plan, self.objective, self.device, self._context, notices)
        except HpoError as error:
            return error, 0, []
        self._thread.start()
        return None, size, notices.said

    def exchange(self, batches: list[list[dict[str, Any]]], verdicts: list[tuple[int, int, Verdict]],
                 granted: list[dict[str, Any]] | None, wait_s: float) -> list[Event]:
        deadline = time.monotonic() + wait_s
        with self._changed:
            self._todo.extend([Claim.from_json(claim) for claim in batch] for batch in batches)
            self._verdicts.update(((number, step), verdict) for number, step, verdict in verdicts)
            if granted is not None:
                self._granted = [Claim.from_json(claim) for claim in granted]
            self._changed.notify_all()
            while not self._urgent and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            events, self._events, self._urgent = self._events, [], False
        return events

    def _say(self, *events: Event, urgent: bool = False) -> None:
        with self._changed:
            self._events.extend(events)
            self._urgent |= urgent
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._todo:
                    self._changed.wait()
                batch = self._todo.pop(0)
            if len(batch) > 1 and hasattr(self.objective, "population"):
                tags = population_tags(batch[0].number, len(batch))
                run_population(self.plan, self.objective, batch, device=self.device, trial_of=self._trial,
                               claim_more=self._claim_more, node=self.node,
                               finished=lambda ended, t=tags: self._say(
                                   *(Ended(claim.number, record.to_json(), t) for claim, record in ended),
                                   urgent=True))
                continue
            for claim in batch:
                record = run_trial(self.plan, self.objective, claim, self._trial(claim), node=self.node)
                self._say(Ended(claim.number, record.to_json()), urgent=True)

    def _trial(self, claim: Claim) -> Trial:
        return make_trial(self.plan, claim, device=self.device, context=self._context,
                          on_report=lambda step, values, n=claim.number: self._say(Reported(n, step, values)),
                          pruning=_AskDriver(self, claim.number, self._rule) if self._rule is not None else None)

    def _claim_more(self, count: int, like: dict[str, Any]) -> list[Claim]:
        """A population's refill, claimed by the driver."""
        self._say(Wanted(count, like), urgent=True)
        with self._changed:
            while self._granted is None:
                self._changed.wait()
            granted, self._granted = self._granted, None
        return granted

    def ask(self, number: int, step: int) -> TrialPruned | None:
        """The driver's decision on a trial's report: asked, then waited for."""
        self._say(Asked(number, step), urgent=True)
        with self._changed:
            while (number, step) not in self._verdicts:
                self._changed.wait()
            verdict = self._verdicts.pop((number, step))
        return None if verdict is None else TrialPruned(*verdict)


class _Notices(SearchListener):
    def __init__(self) -> None:
        self.said: list[str] = []

    def notice(self, text: str) -> None:
        self.said.append(text)


class _AskDriver:
    """A trial's pruning in an actor: the driver's pruner sees the reports (they travel to it
    anyway) and decides, asked only where the rule may stop the trial (at a rung, past the
    warm-up): elsewhere the trial goes on without waiting for the driver."""

    def __init__(self, runner: TrialRunner, number: int, rule: Rule) -> None:
        self.runner = runner
        self.number = number
        self.rule = rule
        self.before = -1  # the step of the report before

    def observe(self, step: int, value: float) -> None:
        """The report itself carries the value to the driver."""

    def decide(self, step: int) -> TrialPruned | None:
        before, self.before = self.before, max(self.before, step)
        if not self.rule.may_stop(self.number, step, before):
            return None
        return self.runner.ask(self.number, step)
