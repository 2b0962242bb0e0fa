"""The pruning rules: whether a trial stops at a step, from its own values and the values the
other trials of its group reported at the same step. Pure functions of those tables: no engine,
no store, no clock; every driver and every population asks the same ones."""

from __future__ import annotations

import abc
import binascii
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from hpo.trial import trials_text

Curve = Mapping[int, float]
"""A trial's values by step, signed so that lower is better (NaN where it reported one)."""


class StepValues(abc.ABC):
    """What a rule reads of the other trials of a group: their values at a step."""

    @abc.abstractmethod
    def others(self, step: int, number: int) -> Sequence[float]:
        """The finite signed values the group's trials other than ``number`` reported at
        ``step``, sorted, lower (better) first."""


class Rule(abc.ABC):
    """Decides whether a trial stops after its report at ``step``.

    Values are signed (``sign`` times the metric), so that lower is better whatever the
    direction; what a rule says (``judge``'s detail) shows them as reported.
    """

    name: ClassVar[str]
    sign: int

    def bracket(self, number: int) -> int | None:
        """The bracket a trial is compared within (Hyperband's); None where there are none."""
        return None

    def may_stop(self, number: int, step: int, before: int) -> bool:
        """Whether ``judge`` can stop trial ``number`` on its report at ``step`` (its report
        before: at ``before``, -1 for none), whatever the others reported: where it cannot, no
        table needs reading and no decision waiting for."""
        return True

    @property
    def first_step(self) -> int:
        """The first step at which the rule may stop any trial (its warm-up)."""
        return 0

    @abc.abstractmethod
    def judge(self, number: int, step: int, own: Curve, table: StepValues) -> str | None:
        """Why trial ``number`` stops after reporting ``step`` (its values so far: ``own``),
        in words (``at epoch 2: 0.263 > median 0.236 of 5 trials``); None to go on."""

    def shown(self, value: float) -> str:
        return f"{self.sign * value:.4g}"


@dataclass(frozen=True)
class Median(Rule):
    """Stops a trial whose best value so far is worse than the median of the other trials'
    values at the same step, once ``warmup_trials`` others have reached that step and the
    trial has made ``warmup_steps`` reports (Optuna's ``MedianPruner``, over every trial that
    reached the step: finished, pruned or still running beside it)."""

    name: ClassVar[str] = "median"
    warmup_steps: int = 0
    warmup_trials: int = 5
    sign: int = 1

    def may_stop(self, number: int, step: int, before: int) -> bool:
        return step >= self.warmup_steps

    @property
    def first_step(self) -> int:
        return self.warmup_steps

    def judge(self, number: int, step: int, own: Curve, table: StepValues) -> str | None:
        if not self.may_stop(number, step, -1):
            return None
        others = table.others(step, number)
        if len(others) < max(1, self.warmup_trials):
            return None
        finite = [value for value in own.values() if math.isfinite(value)]
        median = statistics.median(others)
        if finite and min(finite) <= median:
            return None
        best = min(finite) if finite else math.nan
        worse = "<" if self.sign < 0 else ">"
        return f"at epoch {step}: {self.shown(best)} {worse} median {self.shown(median)} of {trials_text(len(others))}"


@dataclass(frozen=True)
class SuccessiveHalving(Rule):
    """Asynchronous successive halving (ASHA, as Optuna's ``SuccessiveHalvingPruner``): rung
    ``k`` lies at step ``min_resource * reduction_factor ** (min_early_stopping_rate + k)``; a
    trial reaching a rung goes on only if its value there is among the best
    ``1 / reduction_factor`` of every value reported at that rung, its own included (the best
    one while fewer than ``reduction_factor`` trials have reached it)."""

    name: ClassVar[str] = "successive-halving"
    min_resource: int = 1
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    sign: int = 1

    def __post_init__(self) -> None:
        if self.min_resource < 1:
            raise ValueError(f"{self.min_resource=} must be at least 1")
        if self.reduction_factor < 2:
            raise ValueError(f"{self.reduction_factor=} must be at least 2")

    def rung(self, k: int) -> int:
        return self.min_resource * self.reduction_factor ** (self.min_early_stopping_rate + k)

    def crossed(self, step: int, before: int) -> list[int]:
        """The rungs a report at ``step`` is the trial's first at or past (its report before: at
        ``before``): the ones it is judged at."""
        return [k for k in itertools.takewhile(lambda k: self.rung(k) <= step, itertools.count())
                if before < self.rung(k)]

    def may_stop(self, number: int, step: int, before: int) -> bool:
        return bool(self.crossed(step, before))

    @property
    def first_step(self) -> int:
        return self.rung(0)

    def judge(self, number: int, step: int, own: Curve, table: StepValues) -> str | None:
        value = own[step]
        for k in self.crossed(step, max((s for s in own if s < step), default=-1)):
            rung = self.rung(k)
            if math.isnan(value):
                return f"at epoch {step}: {self.shown(value)} at rung {k} (epoch {rung})"
            competing = sorted([*table.others(rung, number), value])
            keep = max(1, len(competing) // self.reduction_factor)
            if value > competing[keep - 1]:
                return (f"at epoch {step}: {self.shown(value)} not among the best {keep} of {len(competing)} "
                        f"trials at rung {k} (epoch {rung})")
        return None


@dataclass(frozen=True)
class Hyperband(Rule):
    """Successive halving in several brackets, each starting its rungs later (Optuna's
    ``HyperbandPruner``): a trial is given a bracket by its number, weighted as Hyperband
    weights them, and is compared only with the trials of its bracket."""

    name: ClassVar[str] = "hyperband"
    min_resource: int = 1
    max_resource: int = 25
    reduction_factor: int = 3
    study_name: str = ""
    sign: int = 1
    brackets: tuple[SuccessiveHalving, ...] = field(init=False)
    budgets: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.max_resource <= self.min_resource:
            raise ValueError(f"{self.max_resource=} must exceed {self.min_resource=}")
        n = math.floor(math.log(self.max_resource / self.min_resource, self.reduction_factor)) + 1
        brackets = tuple(SuccessiveHalving(self.min_resource, self.reduction_factor, i, self.sign) for i in range(n))
        budgets = tuple(math.ceil(n * self.reduction_factor ** (n - 1 - i) / (n - i)) for i in range(n))
        object.__setattr__(self, "brackets", brackets)
        object.__setattr__(self, "budgets", budgets)

    def bracket(self, number: int) -> int:
        left = binascii.crc32(f"{self.study_name}_{number}".encode()) % sum(self.budgets)
        for index, budget in enumerate(self.budgets):
            left -= budget
            if left < 0:
                return index
        raise AssertionError("unreachable")

    def may_stop(self, number: int, step: int, before: int) -> bool:
        return self.brackets[self.bracket(number)].may_stop(number, step, before)

    @property
    def first_step(self) -> int:
        return self.brackets[0].first_step

    def judge(self, number: int, step: int, own: Curve, table: StepValues) -> str | None:
        return self.brackets[self.bracket(number)].judge(number, step, own, table)
