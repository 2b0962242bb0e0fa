"""What runs in a Ray actor: the trials the driver claimed for it, one after another, in a
thread of their own, while the driver's calls to ``exchange`` carry new trials and pruning
decisions in and stream reports, questions and endings out.

Kept apart from the driver so that an actor imports neither MLflow nor the trial store (Optuna,
SQLAlchemy): a fresh actor took three seconds importing them before its first trial."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpo._errors import HpoError
from hpo._plan import SearchPlan
from hpo._trial import Claim, TrialPruned
from hpo.dispatch import usable_device
from hpo.loop import make_trial, run_trial, set_up


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
class Ended:
    """A trial ended: its record, as ``TrialRecord.to_json`` writes it."""

    number: int
    record: dict[str, Any]


Event = Reported | Asked | Ended
Verdict = tuple[str, str] | None
"""A pruning decision as it travels: the rule's name and what it saw, or None to go on."""


class TrialRunner:
    """One actor's trials. ``setup`` runs the objective's setup once; ``exchange`` hands over
    claimed trials and decisions and returns what happened since the last call, waiting up to
    ``wait_s`` for something the driver must answer or finish (reports alone are gathered)."""

    def __init__(self, plan: SearchPlan, objective: Callable[..., Any], device: str) -> None:
        import ray

        self.plan = plan
        self.objective = objective
        self.device = usable_device(device)
        self.node = ray.get_runtime_context().get_node_id()
        self._context: Any = None
        self._changed = threading.Condition()
        self._events: list[Event] = []
        self._urgent = False  # an event waits for an answer, or a trial ended
        self._todo: list[Claim] = []
        self._verdicts: dict[tuple[int, int], Verdict] = {}
        self._thread = threading.Thread(target=self._work, name="hpo-trials", daemon=True)

    def ready(self) -> str:
        """The node this actor was placed on, once it is."""
        return self.node

    def setup(self) -> HpoError | None:
        """Run the objective's setup here; its failure, which ends the search."""
        try:
            self._context = set_up(self.objective, self.device)
        except HpoError as error:
            return error
        self._thread.start()
        return None

    def exchange(self, claims: list[dict[str, Any]], verdicts: list[tuple[int, int, Verdict]],
                 wait_s: float) -> list[Event]:
        deadline = time.monotonic() + wait_s
        with self._changed:
            self._todo.extend(Claim.from_json(claim) for claim in claims)
            self._verdicts.update(((number, step), verdict) for number, step, verdict in verdicts)
            self._changed.notify_all()
            while not self._urgent and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            events, self._events, self._urgent = self._events, [], False
        return events

    def _say(self, event: Event, urgent: bool = False) -> None:
        with self._changed:
            self._events.append(event)
            self._urgent |= urgent
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._todo:
                    self._changed.wait()
                claim = self._todo.pop(0)
            trial = make_trial(self.plan, claim, device=self.device, context=self._context,
                               on_report=lambda step, values, n=claim.number: self._say(Reported(n, step, values)),
                               pruning=_AskDriver(self, claim.number) if self.plan.pruner != "none" else None)
            record = run_trial(self.plan, self.objective, claim, trial, node=self.node)
            self._say(Ended(claim.number, record.to_json()), urgent=True)

    def ask(self, number: int, step: int) -> TrialPruned | None:
        """The driver's decision on a trial's report: asked, then waited for."""
        self._say(Asked(number, step), urgent=True)
        with self._changed:
            while (number, step) not in self._verdicts:
                self._changed.wait()
            verdict = self._verdicts.pop((number, step))
        return None if verdict is None else TrialPruned(*verdict)


class _AskDriver:
    """A trial's pruning in an actor: the driver's pruner sees the reports (they travel to it
    anyway) and decides."""

    def __init__(self, runner: TrialRunner, number: int) -> None:
        self.runner = runner
        self.number = number

    def observe(self, step: int, value: float) -> None:
        """The report itself carries the value to the driver."""

    def decide(self, step: int) -> TrialPruned | None:
        return self.runner.ask(self.number, step)
