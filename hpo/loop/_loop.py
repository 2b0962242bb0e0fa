"""The one trial loop: claim, run with the objective, report, judge, finish, reap lost trials.
Every driver uses it: in this process, in pool workers, in ``hpo worker``, and on Ray, where the
driver's loop claims and finishes and the cluster only runs what it was given."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError
from hpo.files import StoreLocked
from hpo.loop._listener import POPULATION_NOTICE, SearchListener
from hpo.plan import SearchPlan
from hpo.pruning import TrialPruning, make_pruner
from hpo.strategies import WAIT
from hpo.trial import (
    DONE,
    INTERRUPTED,
    WORKER_LOST,
    Claim,
    DivergenceGuard,
    Outcome,
    Pruning,
    ReadParams,
    Trial,
    TrialRecord,
    TrialState,
    raised_at,
    run_objective,
    time_limit,
)

if TYPE_CHECKING:  # a Ray actor runs trials without either (MLflow takes seconds to import)
    from hpo.store import TrialStore
    from hpo.tracking import MlflowTracker, TrialRun

LOOK_EVERY_S = 2.0
"""How often a running trial's pruner takes in what other processes ended meanwhile."""


@dataclass(eq=False)
class Started:
    """A claimed trial: its MLflow child run, its side of the pruner, when it started here."""

    claim: Claim
    run: TrialRun
    pruning: TrialPruning | None = None
    began: float = field(default_factory=time.perf_counter)
    reported: set[int] = field(default_factory=set)
    """The steps whose metric the study holds (or holds back): a step's first value counts."""

    @property
    def number(self) -> int:
        return self.claim.number


def worker_name(pid: int | None = None) -> str:
    """How the store names the process that claimed a trial: host:pid."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


SETUP_SAID_AFTER_S = 60.0
"""How long the objective's setup may run before the search says it waits on it (a setup may
rightly take long, downloading a dataset: it is waited for, not given up)."""


def set_up(objective: Callable[..., Any], device: str, said: Callable[[str], None] | None = None) -> Any:
    """What the objective's optional ``setup(device)`` returns, once per process. Its failure
    ends the search: every trial would fail alike. Past ``SETUP_SAID_AFTER_S``, ``said`` hears
    that it still runs."""
    if not hasattr(objective, "setup"):
        return None
    timer = None
    if said is not None:
        timer = threading.Timer(SETUP_SAID_AFTER_S, said, [
            f"the objective's setup has run for {SETUP_SAID_AFTER_S:g} s on {device}; waiting for it (Ctrl-C "
            "stops the search)"])
        timer.daemon = True
        timer.start()
    try:
        return objective.setup(device)
    except Exception as error:
        message = f"its setup on {device} failed: {type(error).__name__}: {error}"
        raise HpoError(message, argument="objective") from error
    finally:
        if timer is not None:
            timer.cancel()


def make_trial(plan: SearchPlan, claim: Claim, *, device: str, context: Any = None,
               on_report: Callable[[int, dict[str, float]], None] | None = None,
               pruning: Pruning | None = None) -> Trial:
    """The handle the objective gets for a claimed trial."""
    return Trial(claim.number, seed=claim.seed, device=device, stage=claim.stage, metric=plan.space.metric,
                 sign=plan.space.sign, on_report=on_report, pruning=pruning,
                 guard=DivergenceGuard() if plan.divergence_guard else None, context=context)


def run_trial(plan: SearchPlan, objective: Callable[..., Any], claim: Claim, trial: Trial,
              node: str | None = None) -> TrialRecord:
    """Run the objective on a claimed trial: whatever happens becomes the trial's record, but
    for ``KeyboardInterrupt`` and ``SystemExit``, which propagate."""
    started = time.perf_counter()
    params = ReadParams({**plan.space.fixed, **claim.params})
    outcome = run_objective(objective, params, trial, plan.space.metric)
    return record_of(claim, outcome, trial.device, time.perf_counter() - started, node, trial.curve(),
                     params.unread())


def record_of(claim: Claim, outcome: Outcome, device: str, duration_s: float, node: str | None = None,
              curve: list[tuple[int, float]] | None = None, unread: list[str] | None = None) -> TrialRecord:
    """The record of a claimed trial that ended with ``outcome``."""
    return TrialRecord(
        number=claim.number, params=claim.params, state=outcome.state, value=outcome.value, stage=claim.stage,
        reason=outcome.reason, metrics=outcome.metrics, seed=claim.seed, device=device, duration_s=duration_s,
        node=node or socket.gethostname(), where=outcome.where, traceback=outcome.traceback, detail=outcome.detail,
        curve=curve or [], unread=unread or [],
    )


def population_size(population: int | str, plan: SearchPlan, objective: Callable[..., Any], device: str,
                    context: Any, listener: SearchListener | None = None) -> int:
    """How many trials to claim and train together: ``population``, or for ``"auto"`` what suits
    the device and the model where the objective trains populations. What cannot stack (a
    recurrent layer, an optimizer or schedule the trainer does not offer) is refused in one
    line, before any trial; under ``"auto"`` it trains one trial at a time, with a notice."""
    if (population != "auto" and int(population) == 1) or not hasattr(objective, "population"):
        return 1 if population == "auto" else int(population)
    from hpo.population import auto_size, unstackable

    widest = {**plan.space.fixed, **plan.space.widest()}
    try:
        recipe = objective.population(widest, Trial(-1, seed=0, device=device, context=context))
        why = unstackable(recipe, widest, plan.space.params)
        size = auto_size(recipe, widest, device) if population == "auto" and why is None else 0
    except Exception as error:  # the objective's own code: every trial would raise it too
        raise HpoError(f"{raised_at(error)}: {type(error).__name__}: {error} (checking its population before the "
                       "first trial)", argument="objective") from error
    if why is not None:
        if population != "auto":
            raise HpoError(f"objective {plan.objective_name!r} cannot train populations: {why}", argument="population")
        if listener is not None:
            listener.notice(f"{POPULATION_NOTICE}auto trains one trial at a time: {why}")
        return 1
    return _drawing_shapes(plan, size or int(population), auto=population == "auto", listener=listener)


SHAPE_DRAWS = 4
"""Under ``auto``, a budget draws the shape parameters it searches (batch size, width) at least
this often: a population shares one draw, and at 32 rows (1024 on a GPU) a budget of 40 trials
tried one or two batch sizes in all."""


def _drawing_shapes(plan: SearchPlan, size: int, *, auto: bool, listener: SearchListener | None) -> int:
    """``size``, or under ``auto`` a smaller population where ``size`` leaves the budget fewer
    than ``SHAPE_DRAWS`` draws of its shape parameters; either said once where it does."""
    quota = group_quota(plan, size)
    if size <= 1 or quota is None or not plan.shape_params:
        return size
    draws = math.ceil(plan.n_trials / quota)
    if draws >= SHAPE_DRAWS:
        return size
    shapes = "/".join(plan.shape_params)
    fitted = max(1, plan.n_trials // (2 * SHAPE_DRAWS))
    if auto and fitted < size:
        why = (f"so that {plan.n_trials} trials try {shapes} at least {SHAPE_DRAWS} times (a population shares "
               f"one); --population {size} trains faster and tries it {_times(draws)}")
        if listener is not None:
            listener.notice(f"{POPULATION_NOTICE}of {fitted}, not {size} (auto): {why}")
        return fitted
    if listener is not None:
        listener.notice(f"{POPULATION_NOTICE}of {size}: {plan.n_trials} trials try {shapes} {_times(draws)} (a "
                        "population shares one); a smaller --population tries more")
    return size


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def population_tags(first: int, size: int) -> dict[str, str]:
    """The MLflow tags of a population's trials: which population (``host:pid/first trial``), of how many rows."""
    return {"hpo.population": f"{worker_name()}/{first}", "hpo.population_size": str(size)}


def group_quota(plan: SearchPlan, size: int) -> int | None:
    """How many trials a population of ``size`` takes from its group of shape parameters (batch
    size, width): the strategy's share (2K), but at most half the budget where that is more than
    K, so that a budget of 2K or less still draws its shape parameters more than once. None:
    what the strategy has (a grid's groups are its own)."""
    share = plan.strategy.group_share
    return None if share is None else min(share * size, max(size, plan.n_trials // 2))


def run_population(plan: SearchPlan, objective: Any, claims: list[Claim], *, device: str,
                   trial_of: Callable[[Claim], Trial], claim_more: Callable[[int, dict[str, Any]], list[Claim]],
                   finished: Callable[[list[tuple[Claim, TrialRecord]]], None], node: str | None = None) -> None:
    """Train claimed trials of one group (their shape parameters alike) as one population with
    the objective's recipe: the records of the members that stopped at an epoch's end go to
    ``finished`` together, and their rows to trials of the same group from
    ``claim_more(count, like)`` while others train on and the group's quota lasts; once every
    member has stopped, the population ends and the next claim draws its group afresh. Written
    once for this process and a Ray actor alike."""
    from hpo.population import train_population

    members: dict[int, tuple[Claim, ReadParams, float]] = {}
    like = {key: value for key, value in claims[0].params.items() if key in plan.shape_params}
    quota = group_quota(plan, len(claims)) if like else None

    def joined(batch: list[Claim]) -> list[tuple[ReadParams, Trial]]:
        given = []
        for claim in batch:
            params = ReadParams({**plan.space.fixed, **claim.params})
            members[claim.number] = claim, params, time.perf_counter()
            given.append((params, trial_of(claim)))
        return given

    def refill(count: int) -> list[tuple[ReadParams, Trial]]:
        if like and count >= len(claims):  # every member stopped at once: the next group is a draw of its own
            return []
        if quota is not None:
            count = min(count, quota - len(members))
        return joined(claim_more(count, like)) if count > 0 else []

    def ended(stopped: list[tuple[Trial, Outcome]]) -> None:
        # members share what they do not differ in, read from one of them: read by one, read by all
        read = set().union(*(p.read for _, p, _ in members.values()))
        records = []
        for trial, outcome in stopped:
            claim, params, began = members[trial.number]
            records.append((claim, record_of(claim, outcome, device, time.perf_counter() - began, node,
                                             trial.curve(), [key for key in params.plain if key not in read])))
        finished(records)

    first = joined(claims)
    train_population(objective.population(*first[0]), first, plan.space.metric, refill=refill, ended=ended,
                     time_limit_s=plan.trial_timeout)


class TrialLoop:
    """The steps of a trial's life, each written once, against one store and one tracker: a
    claim starts trials (their MLflow runs, heartbeats and pruning), a report is logged and
    judged, an ending is written to both stores and heard by the listener, and trials whose
    process died are reaped. ``close`` leaves none of this process's trials running."""

    def __init__(self, plan: SearchPlan, store: TrialStore, tracker: MlflowTracker, *,
                 listener: SearchListener | None = None, deadline: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self.store = store
        self.tracker = tracker
        self.listener = listener or SearchListener()
        self.deadline = deadline
        """When (on ``clock``) this run of the search stops starting trials: its ``timeout``."""
        self.clock = clock
        self.pruner = make_pruner(plan.pruning, plan.space, plan.study_name)
        if self.pruner is not None:
            self.pruner.refresh = self.look
        self.running: dict[int, Started] = {}
        """This process's trials that have started and not ended, by number."""
        self.ours = {worker_name()}
        """The workers whose trials are this search's own: those this loop claimed for, and a
        pool's worker processes."""
        self._heartbeat = store.heartbeat()
        self._seen = 0  # how many of the store's ended trials the loop has taken in
        self._said_smaller = False
        self._looked = time.monotonic()

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def claim(self, worker: str, device: str, count: int = 1, like: dict[str, Any] | None = None,
              ) -> list[Started] | object:
        """Up to ``count`` trials, started in the store, in MLflow, in the heartbeat and in the
        pruner; ``WAIT`` or ``DONE`` as the store says, and ``DONE`` past the deadline. The
        trials of processes that died are failed first. Trials claimed together (a population)
        share their shape parameters: the first one's, or ``like``'s (a population's refill)."""
        if self.out_of_time:
            return DONE
        self.reap()
        shape = self.plan.shape_params if count > 1 or like is not None else ()
        claims = self.store.claim(self.plan, worker, count, shape=shape, like=like)
        self.ours.add(worker)
        self.take_in_endings()
        if not isinstance(claims, list):
            return claims
        if like is None and count > 1 and len(claims) < count:
            self._smaller_than_asked(len(claims), count, claims[0].params)
        batch = []
        for claim in claims:
            tags = {"hpo.retry_of": str(claim.retry_of)} if claim.retry_of is not None else None
            run = self.tracker.start_trial(claim.number, claim.params, stage=claim.stage, seed=claim.seed,
                                           device=device, tags=tags)
            pruning = self.pruner.trial(claim.number, claim.stage) if self.pruner is not None else None
            batch.append(Started(claim, run, pruning))
        self._heartbeat.add(*(started.claim.trial_id for started in batch))
        self.running.update((started.number, started) for started in batch)
        self.listener.running([started.number for started in batch])
        return batch

    def trials_left(self) -> int:
        """Trials the budget has yet to start (at least one): no driver needs more workers or
        actors than that, each of which sets the objective up."""
        return max(1, self.plan.n_trials - len(self.store.counted()))

    def _smaller_than_asked(self, got: int, asked: int, first: dict[str, Any]) -> None:
        """Say once why a population starts with fewer rows than asked."""
        if self._said_smaller:
            return
        self._said_smaller = True
        if (counted := len(self.store.counted())) >= self.plan.n_trials:
            why = "the budget had no more trials"
        elif counted >= self.plan.runnable_trials:
            why = f"the grid had no more points ({self.plan.runnable_trials} in all)"
        elif group := {key: first[key] for key in self.plan.shape_params if key in first}:
            why = f"the strategy had no more trials of its group ({', '.join(f'{k}={v}' for k, v in group.items())})"
        else:
            why = "the strategy's next trials wait for those running"
        self.listener.notice(f"{POPULATION_NOTICE}of {got}, not {asked}: {why}")

    def trial(self, started: Started, *, device: str, context: Any = None) -> Trial:
        """The handle the objective gets for a trial started here."""
        return make_trial(self.plan, started.claim, device=device, context=context,
                          on_report=lambda step, values: self.logged(started, step, values), pruning=started.pruning)

    def logged(self, started: Started, step: int, values: dict[str, float]) -> None:
        """A report, as the trial's MLflow curves and the study's intermediate values (its metric)
        show it, with a pruner or without, as Optuna's ``trial.report`` does: a step reported
        again keeps its first value there. The pruner is shown it by the trial's ``pruning``."""
        started.run.log(step, values)
        if self.plan.space.metric in values and step not in started.reported:
            started.reported.add(step)
            self.store.report(started.claim.trial_id, step, values[self.plan.space.metric])

    def run(self, batch: list[Started], objective: Callable[..., Any], *, device: str, context: Any = None,
            worker: str | None = None) -> list[TrialRecord]:
        """Run claimed trials here and finish them: together, in populations of the members
        that can train together, where the objective offers it (each population's rows refilled
        by trials ``worker`` claims as its members stop, where named); else one after another,
        each within the plan's time limit. Whatever stops the loop itself (Ctrl-C, SIGTERM, an
        error that ends the search) finishes every unfinished one as interrupted first: none is
        left running, and they run again on resume. Returns the records of ``batch``'s trials
        (a population's refills are finished as they end, and not returned)."""
        records: dict[int, TrialRecord] = {}
        try:
            if len(batch) > 1 and hasattr(objective, "population"):
                for group in self._populations(batch):
                    records.update(self._run_population(group, objective, device=device, context=context,
                                                        worker=worker))
            else:
                for started in batch:
                    with time_limit(self.plan.trial_timeout):
                        record = run_trial(self.plan, objective, started.claim,
                                           self.trial(started, device=device, context=context))
                    records[started.number] = self.finish([(started, record)])[0]
        except BaseException:
            self.interrupt(list(self.running.values()), device)
            raise
        return [records[started.number] for started in batch]

    def _populations(self, batch: list[Started]) -> list[list[Started]]:
        from hpo.population import group_key

        groups: dict[str, list[Started]] = {}
        for started in batch:
            groups.setdefault(group_key({**self.plan.space.fixed, **started.claim.params}), []).append(started)
        return list(groups.values())

    def _run_population(self, group: list[Started], objective: Any, *, device: str, context: Any,
                        worker: str | None) -> dict[int, TrialRecord]:
        """Train ``group`` as one population here (``run_population``), its rows refilled with
        trials ``worker`` claims, each member finished as it ends."""
        records: dict[int, TrialRecord] = {}
        tags = population_tags(group[0].number, len(group))

        def claim_more(count: int, like: dict[str, Any]) -> list[Claim]:
            batch = self.claim(worker, device, count, like) if worker is not None else DONE
            return [started.claim for started in batch] if isinstance(batch, list) else []

        def finished(ended: list[tuple[Claim, TrialRecord]]) -> None:
            stored = self.finish([(self.running[claim.number], record) for claim, record in ended], tags)
            records.update((record.number, record) for record in stored)

        run_population(self.plan, objective, [started.claim for started in group], device=device,
                       trial_of=lambda claim: self.trial(self.running[claim.number], device=device, context=context),
                       claim_more=claim_more, finished=finished)
        return records

    def finish(self, ended: list[tuple[Started, TrialRecord]], tags: dict[str, str] | None = None,
               ) -> list[TrialRecord]:
        """End trials started here, in the store together (naming each one's child run, once
        MLflow has made it), then each child run as the store holds the trial; the listener
        hears each that ended as its own (not one another process failed meanwhile as lost)."""
        stored = self.store.finish_many(
            [(s.claim, dataclasses.replace(record, run_id=s.run.run_id or "")) for s, record in ended])
        for (started, _), record in zip(ended, stored, strict=True):
            started.run.finish(record, tags)
            self._heartbeat.discard(started.claim.trial_id)
            self.running.pop(started.number, None)
        self.take_in_endings()
        for record in stored:
            if not record.lost:
                self.listener.trial_finished(record)
        return stored

    def interrupt(self, batch: list[Started], device: str) -> None:
        """End trials that stopped with their run (Ctrl-C, SIGTERM, an error that ends the
        search) as interrupted: they run again on resume. Not where the error is the study's
        store kept locked by another process: each write would wait for it in vain, and the next
        run fails them as lost and runs them again."""
        if batch and not isinstance(sys.exc_info()[1], StoreLocked):
            interrupted = Outcome(TrialState.FAILED, reason=INTERRUPTED)
            self.finish([(s, record_of(s.claim, interrupted, device, time.perf_counter() - s.began)) for s in batch])

    def close(self, device: str = "cpu") -> None:
        """This process's part of the search is over: any trial still running here is
        interrupted, and the heartbeat stops."""
        try:
            self.interrupt(list(self.running.values()), device)
        finally:
            self._heartbeat.close()

    def fail(self, trial_ids: list[int], reason: str = WORKER_LOST) -> list[TrialRecord]:
        """Fail trials whose process is gone, in the store and in MLflow (creating the child
        run of a trial that died before it had one): every trial keeps exactly one run."""
        failed = self.store.fail(trial_ids, reason)
        for record in failed:
            self.tracker.record_lost(record)
            if (started := self.running.pop(record.number, None)) is not None:
                self._heartbeat.discard(started.claim.trial_id)
        return failed

    def fail_worker(self, worker: str, reason: str = WORKER_LOST) -> list[TrialRecord]:
        """The running trials of a process known to be gone."""
        return self.fail(self.store.running(worker), reason)

    def reap(self) -> list[TrialRecord]:
        """Fail the trials whose heartbeat stopped: their process died."""
        return self.fail(self.store.stale())

    def take_in_endings(self, look: bool = False) -> None:
        """Show the pruner the trials that ended since it last looked (here, or as the store's
        claims read them; ``look``: in the study now), and the listener those of this run of
        the search that processes not its own ended."""
        ended = self.store.finished_since(self._seen, look=look)
        if not ended:
            return
        self._seen += len(ended)
        if self.pruner is not None:
            self.pruner.ended(ended)
        elsewhere = [t for t in ended if t.session == self.store.session and t.worker not in self.ours and not t.lost]
        if elsewhere:
            self.listener.ended_elsewhere(elsewhere)

    def look(self) -> None:
        """Take in what other processes ended, every ``LOOK_EVERY_S`` (a trial running long, a
        pool's parent)."""
        if time.monotonic() - self._looked >= LOOK_EVERY_S:
            self._looked = time.monotonic()
            self.take_in_endings(look=True)


def work(
    loop: TrialLoop,
    objective: Callable[..., Any],
    *,
    device: str,
    context: Any,
    wait_for_others: bool = True,
    population: int | str = 1,
) -> None:
    """Claim and run trials in this process — ``population`` at a time — until the budget is
    claimed, and, if asked, until every trial of it has finished (running a lost trial's
    retry if one turns up meanwhile)."""
    worker = worker_name()
    try:
        size = population_size(population, loop.plan, objective, device, context, loop.listener)
        while True:
            batch = loop.claim(worker, device, size)
            if batch is DONE:
                if not wait_for_others or not loop.store.unfinished():
                    return
                time.sleep(1.0)  # another process is still finishing trials of this budget
            elif batch is WAIT:
                time.sleep(0.5)  # the next stage waits for trials running elsewhere
            else:
                assert isinstance(batch, list)
                loop.run(batch, objective, device=device, context=context, worker=worker)
    finally:
        loop.close(device)
