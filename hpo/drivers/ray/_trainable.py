"""What runs in a Ray trial's actor: one claimed trial, its reports forwarded to Tune.

Kept apart from the driver so that an actor imports neither MLflow nor the trial store (Optuna,
SQLAlchemy): a fresh actor took three seconds importing them before its first trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hpo._plan import SearchPlan
from hpo._trial import Claim
from hpo.dispatch import usable_device
from hpo.drivers.ray._median import MedianRule
from hpo.loop import run_trial, set_up

_FORWARD_EVERY_S = 1.0
"""Without a Tune scheduler, how often a trial's reports go to the driver (its MLflow curves)."""

_CONTEXTS: dict[tuple[str, str, str], Any] = {}
"""What the objective's ``setup`` returned in this actor's process, by study, objective and
device: Tune reuses actors between trials, so it runs once per actor."""


class _StoppedByTune(BaseException):
    """Carries what ``tune.report`` raised when Tune stopped the trial (a scheduler's decision)
    through the objective, which would otherwise take it for the objective's own exit."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


def trainable_main(config: dict[str, Any], *, objective: Callable[..., Any], plan: SearchPlan, device: str,
                   each_report: bool) -> None:
    """Runs in a Tune actor: one claimed trial, its reports forwarded to Tune (``each_report``:
    each at once, for the scheduler that decides on it), the trial's record in the last report."""
    import ray
    from ray import tune

    if config.get("deadline") is not None and time.time() >= config["deadline"]:
        tune.report({"hpo": {"final": True, "unstarted": True}})  # no trial starts after the search's timeout
        return
    device = usable_device(device)
    key = (plan.study_name, plan.objective_name, device)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = set_up(objective, device)
    metric = plan.space.metric
    node = ray.get_runtime_context().get_node_id()
    # Each Tune result is a round trip between Tune's controller and this actor: without a
    # scheduler to read each report, reports go together, at most one result a second (and the
    # last ones with the trial's record).
    held: list[tuple[int, dict[str, float]]] = []
    sent_at = time.monotonic()

    def forward(step: int, metrics: dict[str, float]) -> None:
        nonlocal sent_at
        held.append((step, metrics))
        if each_report or time.monotonic() - sent_at >= _FORWARD_EVERY_S:
            try:
                tune.report({**metrics, "hpo": {"reports": held[:], "node": node}})
            except BaseException as error:  # Tune ends the trial's thread this way
                raise _StoppedByTune(error) from error
            held.clear()
            sent_at = time.monotonic()

    median = config.get("median")
    should_prune = None if median is None else MedianRule(median["table"], median["key"], plan.space.direction,
                                                          median["board"])
    try:
        record = run_trial(plan, objective, Claim.from_json(config["hpo"]), device=device, context=_CONTEXTS[key],
                           on_report=forward, should_prune=should_prune, node=node)
    except _StoppedByTune as stopped:
        raise stopped.error from None
    last = {metric: record.value} if record.value is not None else {}
    tune.report({**last, "hpo": {"reports": held, "final": True, "record": record.to_json()}})
