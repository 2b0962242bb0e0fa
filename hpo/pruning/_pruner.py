"""A search's pruning as one process sees it: the rule, and every value the trials of each
group reported, step by step, from the trials that ended (the store's records) and those that
run here (a population's members, a Ray driver's trials)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence

from hpo.pruning._rules import Curve, Hyperband, Median, Rule, StepValues, SuccessiveHalving
from hpo.spaces import Pruning, SearchSpace
from hpo.trial import TrialPruned, TrialRecord


class _Group(StepValues):
    """The values of one group's trials: by step, by trial; each step's sorted once per change."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict[int, float]] = {}
        self._sorted: dict[int, list[float]] = {}

    def add(self, number: int, step: int, value: float) -> None:
        values = self.by_step.setdefault(step, {})
        if number not in values:  # a step's first value counts, as Optuna keeps it
            values[number] = value
            self._sorted.pop(step, None)

    def others(self, step: int, number: int) -> Sequence[float]:
        values = self.by_step.get(step)
        if not values:
            return []
        if step not in self._sorted:
            self._sorted[step] = sorted(v for v in values.values() if math.isfinite(v))
        ranked = self._sorted[step]
        own = values.get(number)
        if own is None or not math.isfinite(own):
            return ranked
        without = list(ranked)
        without.remove(own)
        return without


class Pruner:
    """The rule over this process's table. Trials are compared within their group: their
    coarse-to-fine stage where ``by_stage``, and their bracket under Hyperband. ``refresh``, if
    set, is called before each decision (to take in what ended elsewhere, at its own pace)."""

    def __init__(self, rule: Rule, *, by_stage: bool = True) -> None:
        self.rule = rule
        self.by_stage = by_stage
        self.refresh: Callable[[], None] | None = None
        self._groups: dict[Hashable, _Group] = {}
        self._ended: set[int] = set()

    @property
    def name(self) -> str:
        return self.rule.name

    def group(self, number: int, stage: int) -> _Group:
        key = (stage if self.by_stage else None, self.rule.bracket(number))
        if key not in self._groups:
            self._groups[key] = _Group()
        return self._groups[key]

    def ended(self, records: Iterable[TrialRecord]) -> None:
        """Take in the curves of trials that ended (in this process or elsewhere)."""
        for record in records:
            if record.number in self._ended:
                continue
            self._ended.add(record.number)
            group = self.group(record.number, record.stage)
            for step, value in record.curve:
                group.add(record.number, int(step), self.rule.sign * float(value))

    def trial(self, number: int, stage: int) -> TrialPruning:
        """The pruning of one running trial: what it reports goes into the table at once."""
        return TrialPruning(self, number, stage)


class TrialPruning:
    """One trial's side of the pruner: ``observe`` each value of the space's metric as it is
    reported, ``decide`` once the step's reports (a population's, all members') are in."""

    def __init__(self, pruner: Pruner, number: int, stage: int) -> None:
        self.pruner = pruner
        self.number = number
        self.stage = stage
        self.own: dict[int, float] = {}
        self._group = pruner.group(number, stage)

    def observe(self, step: int, value: float) -> None:
        signed = self.pruner.rule.sign * value
        if step not in self.own:
            self.own[step] = signed
            self._group.add(self.number, step, signed)

    def decide(self, step: int) -> TrialPruned | None:
        if step not in self.own:
            return None
        before = max((s for s in self.own if s < step), default=-1)
        if not self.pruner.rule.may_stop(self.number, step, before):
            return None
        if self.pruner.refresh is not None:
            self.pruner.refresh()
        detail = self.pruner.rule.judge(self.number, step, _Own(self.own, step), self._group)
        return None if detail is None else TrialPruned(self.pruner.name, detail)


class _Own(dict):  # type: ignore[type-arg]
    """A trial's values up to ``step``: what it had reported when it reached it."""

    def __init__(self, own: Curve, step: int) -> None:
        super().__init__((s, v) for s, v in own.items() if s <= step)


def make_pruner(pruning: Pruning, space: SearchSpace, study_name: str) -> Pruner | None:
    """The search's pruner (None for ``none``), its warm-up in reports scaled to the space's
    epochs; a trial's first rung or judged step is the warm-up's."""
    sign = space.sign
    steps = pruning.steps(space.epochs)
    if pruning.pruner == "median":
        rule: Rule = Median(warmup_steps=steps, warmup_trials=pruning.warmup_trials, sign=sign)
    elif pruning.pruner == "successive-halving":
        rule = SuccessiveHalving(min_resource=max(1, steps), reduction_factor=3, sign=sign)
    elif pruning.pruner == "hyperband":
        rule = Hyperband(min_resource=max(1, steps), max_resource=max(steps + 1, space.epochs), reduction_factor=3,
                         study_name=study_name, sign=sign)
    else:
        return None
    return Pruner(rule, by_stage=pruning.by_stage)
