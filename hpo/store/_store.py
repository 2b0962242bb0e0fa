"""The trial store: a search's study in an Optuna storage, the one place every engine and every
process claims, finishes and fails trials."""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from hpo._errors import HpoError
from hpo.files import (
    LOCKED,
    bounded,
    create_whole,
    locked,
    process_ended,
    sqlite_path,
    this_process,
    unusable,
    writable,
)
from hpo.plan import SearchPlan
from hpo.spaces import CategoricalParam, FloatParam, SearchSpace
from hpo.store._budget import in_budget, retried
from hpo.store._locks import StudyLock
from hpo.store._mirror import StudyMirror
from hpo.store._optuna import End, StudyWrites, study_writes
from hpo.strategies import WAIT, BaseStrategy, Suggestion
from hpo.trial import DONE, WORKER_LOST, Claim, TrialRecord, TrialState, by_state, trial_seed, trials_text

optuna.logging.set_verbosity(optuna.logging.WARNING)

PLAN = "hpo.plan"  # the plan, whole: what a joining process continues
TRACKING = "hpo.tracking"  # the MLflow experiment and parent run the trials are written to
FINGERPRINT = "hpo.space_fingerprint"
OBJECTIVE = "hpo.objective_fingerprint"  # the objective's source, hashed: a rerun with another is told
SESSION = "hpo.session"  # how many runs the search has had: claims carry the run's number
CLAIM = "hpo.claim"  # stage, worker (host:pid of the process that claimed it), retry_of (the lost trial
# whose configuration it runs again): one attribute, as each costs the claim a database round trip
ENDED = "hpo.ended"  # why the last run of the search stopped before its budget (its --timeout)
TEST = "hpo.test"  # the best configuration's test score, once evaluated
RUN_ID = "hpo.run_id."  # + a trial's number, on the study: its MLflow run, named after it ended
RESULT = "hpo.result"  # state, reason, metrics, seed, device, duration: written once, as it ends
LOOK_EVERY_S = 1.0  # how often a process looks for trials whose process died (they stay silent 20 s first)
REPORTS_EVERY_S = 1.0  # how long a trial's intermediate values may wait to be written together

_STATES = {
    OptunaState.RUNNING: TrialState.RUNNING,
    OptunaState.COMPLETE: TrialState.COMPLETE,
    OptunaState.PRUNED: TrialState.PRUNED,
    OptunaState.FAIL: TrialState.FAILED,
}
_TELL = {ours: theirs for theirs, ours in _STATES.items() if ours is not TrialState.RUNNING}


def default_storage_url(home: Path) -> str:
    return f"sqlite:///{(home / 'optuna.db').resolve()}"  # the folder is made with the store (``create_whole``)


@contextlib.contextmanager
def _optuna_on_purpose() -> Iterator[None]:
    """Heartbeats (let a study outlive a dead process), a metric name, TPE's constant liar: Optuna
    flags them as experimental, and heartbeats as meant for ``Study.optimize``; hpo runs its
    own loop with them on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        yield


def study_names(url: str) -> list[str]:
    """The studies hpo started in a storage, oldest first (none where the file does not exist)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return []
    with _optuna_on_purpose():
        summaries = optuna.get_all_study_summaries(_storage_at(url), include_best_trial=False)
    return [s.study_name for s in summaries if PLAN in s.user_attrs]


def _database_url(url: str) -> None:
    if "://" not in url:
        raise HpoError(f"{url!r} is not a database URL (e.g. sqlite:///study.db)", argument="storage")


def _storage_at(url: str, **options: Any) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``url`` (``options``: its heartbeat); one that cannot be opened is one
    line naming it."""
    _database_url(url)
    try:
        with _optuna_on_purpose():
            return optuna.storages.RDBStorage(bounded(url), **options)
    except Exception as error:
        if (path := sqlite_path(url)) is not None:
            raise unusable(path, "Optuna study store", error, "storage") from None
        message = f"cannot open {url}: {type(error).__name__}: {error}"
        raise HpoError(message.splitlines()[0], argument="storage") from None


@dataclass(frozen=True)
class StudySummary:
    """A search's study as its storage holds it (``hpo studies``)."""

    name: str
    plan: dict[str, Any]
    """As saved with the study (``SearchPlan.to_json``): its space, strategy and budget."""
    counted: list[TrialRecord]
    """The trials that take a place in its budget, as its last run counted them."""
    best: float | None
    last: datetime.datetime | None
    """When a trial of it last started or ended."""

    def __repr__(self) -> str:
        """One line, as ``hpo studies`` lists it (the dataclass's own printed its whole plan and
        every trial)."""
        best = "no best trial" if self.best is None else f"best {self.best:.4g}"
        return (f"<StudySummary {self.name!r}: {len(self.counted)} of {self.plan.get('n_trials', '?')} trials "
                f"({by_state(self.counted)}); {best}>")


def study_summaries(url: str) -> list[StudySummary]:
    """The studies hpo started in a storage, oldest first (none where the file does not exist)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return []
    storage = _storage_at(url)
    with _optuna_on_purpose():
        summaries = [s for s in optuna.get_all_study_summaries(storage, include_best_trial=True)
                     if PLAN in s.user_attrs]
    found = []
    for summary in summaries:
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
        trials = [t for t in trials if t.state is not OptunaState.WAITING]
        moments = [m for t in trials for m in (t.datetime_start, t.datetime_complete) if m is not None]
        last_run = int(summary.user_attrs.get(SESSION, 0))
        best = summary.best_trial.value if summary.best_trial is not None else None
        found.append(StudySummary(summary.study_name, summary.user_attrs[PLAN],
                                  in_budget([to_record(t) for t in trials], last_run), best,
                                  max(moments, default=None)))
    return found


@dataclass(frozen=True)
class Sampled:
    """How the store samples a sampled strategy (``hpo.strategies.SamplerStrategy``)."""

    sampler: Callable[[int], optuna.samplers.BaseSampler]
    """Its Optuna sampler, made for one trial from the trial's seed."""
    at_once: int
    """The most trials it samples under one hold of the study's lock. A TPE sample costs its
    arithmetic over every trial (40 ms with 5,000 done, on the 2-core machine): a population of a
    thousand claimed at once kept the other processes waiting past the lock's limit. A GP sample
    fits the process again (0.3 s with 200 done; 8 took 2.8 s)."""


SAMPLERS = {
    "tpe": Sampled(lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True), at_once=64),
    "gp": Sampled(lambda seed: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False), at_once=8),
}
"""Each sampled strategy's sampling, by its name. GP draws a parameter that a condition leaves
out of some trials (a momentum only for SGD) at random: it models the parameters every trial has."""


class TrialStore:
    """A search's trials in an Optuna storage (any RDB URL: an SQLite file for one machine,
    PostgreSQL for many), shared by every engine and every process of the search.

    Claiming a trial reads the history, asks the strategy and starts the trial with its
    parameters in one transaction, under the study's lock (``StudyLock``): no two processes
    claim the same grid point or one trial too many. Ending a trial takes the same lock: it
    ends once, whoever fails it as lost or finishes it first wins, and the other is told so
    instead of crashing.

    Args:
        url: The storage URL.
        study_name: The study, created by ``open``.
        heartbeat_interval: Seconds between a running trial's heartbeats. A trial silent for
            ``grace_period`` seconds, and still so two heartbeats later, belonged to a process
            that died.
    """

    def __init__(self, url: str, study_name: str, *, heartbeat_interval: int = 5, grace_period: int = 20) -> None:
        _database_url(url)
        if grace_period <= heartbeat_interval:
            raise ValueError(f"{grace_period=} must exceed {heartbeat_interval=}")
        self.url = url
        self.study_name = study_name
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._lock: Any = StudyLock(url, study_name)
        self._storage: optuna.storages.RDBStorage | None = None
        self._writes: StudyWrites | None = None
        self._study: optuna.Study | None = None
        self._held: list[tuple[int, int, float]] = []  # reports not written yet: (trial id, step, value)
        self._held_since = time.monotonic()  # when the first of the reports held back came
        self._stale_since: dict[int, float] = {}  # trial id -> when this process first saw it stale
        self._looked_at = -math.inf  # when this process last looked for stale trials
        self._known: dict[int, tuple[OptunaState, TrialRecord | None]] = {}  # trial id -> state, record as read
        self._finished: list[TrialRecord] = []  # the trials of _known, in the order they were known to be finished
        self._mirror: StudyMirror | None = None  # where TPE samples, made at the first claim
        self.session = 0  # this run's number among the search's runs, known once the study is opened

    def __getstate__(self) -> dict[str, Any]:
        """Only the address travels (to a worker process): connections and locks are made there."""
        return {**self.__dict__, "_lock": None, "_storage": None, "_study": None, "_writes": None,
                "_stale_since": {}, "_held": [], "_known": {}, "_finished": [], "_mirror": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = StudyLock(self.url, self.study_name)

    # -- the study --------------------------------------------------------------------------
    @property
    def storage(self) -> optuna.storages.RDBStorage:
        """The storage, connected on first use; an SQLite file is created whole if it is missing."""
        if self._storage is None:
            path = sqlite_path(self.url)
            if path is not None:
                writable(path, "storage")
                create_whole(path, optuna.storages.RDBStorage, "storage")
            self._storage = _storage_at(self.url, heartbeat_interval=self.heartbeat_interval,
                                        grace_period=self.grace_period)
            if path is not None:  # kept locked by another process: one line naming it, whenever it happens
                sqlalchemy.event.listen(self._storage.engine, "handle_error", functools.partial(_if_locked, path))
        return self._storage

    @property
    def writes(self) -> StudyWrites:
        """How this store writes to its storage (see ``study_writes``)."""
        if self._writes is None:
            self._writes = study_writes(self.storage)
        return self._writes

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            try:
                self._study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            except KeyError:
                raise HpoError(f"no study {self.study_name!r} in {self.url}", argument="study_name") from None
        return self._study

    def exists(self) -> bool:
        path = sqlite_path(self.url)
        if path is not None and not path.exists():
            return False  # and nothing is created to find it out
        try:
            self.storage.get_study_id_from_name(self.study_name)
        except KeyError:
            return False
        return True

    def check(self, plan: SearchPlan, objective: str | None = None, *, keep: bool = False) -> None:
        """Refuse to resume a study created for another version of the space, or with another
        version of the objective (``objective``: its fingerprint) unless asked to ``keep`` it.
        A study whose trials all failed (or that has none) has no result to keep apart: the
        objective changed to fix it, and the search goes on."""
        if not self.exists():
            return
        attrs = self.study.user_attrs
        if attrs.get(FINGERPRINT) not in (None, plan.space.fingerprint):
            raise HpoError(f"study {plan.study_name!r} was created with a different version of space "
                           f"{plan.space.name!r}; start a fresh one with new_study (--new-study)",
                           argument="study_name")
        if keep or objective is None or attrs.get(OBJECTIVE) in (None, objective):
            return
        if n := len(self.trials([OptunaState.COMPLETE, OptunaState.PRUNED])):
            raise HpoError(f"{plan.objective_name} changed since study {plan.study_name!r} finished {trials_text(n)} "
                           "with it; go on with them with keep_study (--keep-study), or start a fresh study with "
                           "new_study (--new-study)", argument="objective")

    def open(self, plan: SearchPlan, tracking: dict[str, str], objective: str | None = None) -> None:
        """Create the study (or reopen it) and save the plan, where its trials are tracked and the
        objective's fingerprint; this run of the search is the study's next ``session``."""
        with _optuna_on_purpose():
            study = optuna.create_study(storage=self.storage, study_name=self.study_name,
                                        direction=plan.space.direction, load_if_exists=True)
            if study.metric_names is None:
                study.set_metric_names([plan.space.metric])
        attrs = study.user_attrs
        if FINGERPRINT not in attrs:
            study.set_user_attr(FINGERPRINT, plan.space.fingerprint)
        if objective is not None and attrs.get(OBJECTIVE) != objective:
            study.set_user_attr(OBJECTIVE, objective)
        self.session = int(attrs.get(SESSION, 0)) + 1
        study.set_user_attr(SESSION, self.session)
        study.set_user_attr(PLAN, plan.to_json())
        study.set_user_attr(TRACKING, tracking)
        self._study = study
        self._mirror = None

    def discard_unstarted(self) -> bool:
        """Delete the study this run created if it never started a trial and no other run opened
        it since: a search stopped before its first trial (a model that cannot stack, an objective
        whose setup fails) leaves no empty study behind. Whether it was deleted."""
        if self.session != 1:
            return False
        with self.locked():
            try:
                study_id = self.storage.get_study_id_from_name(self.study_name)
            except KeyError:
                return False
            if (self.storage.get_study_user_attrs(study_id).get(SESSION) != 1
                    or self.storage.get_all_trials(study_id, deepcopy=False)):
                return False
            optuna.delete_study(study_name=self.study_name, storage=self.storage)
        self._study = self._mirror = None
        self._known, self._finished = {}, []
        self.__dict__.pop("_study_id", None)
        return True

    def locked(self) -> Any:
        """The study's lock (``StudyLock``), for what two processes must not do at once."""
        return self._lock

    def saved(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The plan and tracking identity saved with the study, for a process that joins it."""
        attrs = self.study.user_attrs
        if PLAN not in attrs:
            raise HpoError(f"{self.study_name!r} was not started by hpo search", argument="study_name")
        self.session = int(attrs.get(SESSION, 1))  # a joining process works in the search's current run
        return attrs[PLAN], attrs[TRACKING]

    def saved_plan(self) -> dict[str, Any] | None:
        """The plan the study was last run with (``SearchPlan.to_json``); None for a study hpo
        did not start."""
        return self.study.user_attrs.get(PLAN)

    def record_ending(self, why: str) -> None:
        """Why this run of the search ended before its budget (``""``: it did not)."""
        if why or self.study.user_attrs.get(ENDED):
            self.study.set_user_attr(ENDED, why)

    def record_test(self, metrics: dict[str, float]) -> None:
        """Keep the best configuration's test score with the study (for its report)."""
        self.study.set_user_attr(TEST, metrics)

    def tested(self) -> dict[str, float]:
        return dict(self.study.user_attrs.get(TEST, {}))

    # -- trials -----------------------------------------------------------------------------
    def trials(self, states: Sequence[OptunaState] | None = None) -> list[TrialRecord]:
        """Every trial, oldest first (trials waiting in Optuna's queue are not hpo's)."""
        frozen = self.study.get_trials(deepcopy=False, states=states)
        named = self.study.user_attrs
        return [to_record(t, named.get(f"{RUN_ID}{t.number}", "")) for t in frozen
                if t.state is not OptunaState.WAITING]

    def name_runs(self, run_ids: Mapping[int, str]) -> int:
        """Name in the study the MLflow run of each finished trial whose result does not name one
        (``run_ids``: by trial number): a trial that ended before MLflow's background writer had
        made its run. Each is a study attribute (``RUN_ID`` and the number): Optuna changes no
        finished trial. Returns how many it named."""
        named = {f"{RUN_ID}{t.number}": run_ids[t.number] for t in self.trials()
                 if t.finished and not t.run_id and run_ids.get(t.number)}
        if named:
            with self._lock:
                self.writes.set_study_attrs(self._study_id, named)
        return len(named)

    def counted(self) -> list[TrialRecord]:
        """The trials that take a place in the budget (see ``in_budget``)."""
        return in_budget(self.trials(), self.session)

    def in_next_run(self) -> list[TrialRecord]:
        """The trials that take a place in the budget of the search's next run (``open`` starts it):
        those that failed in the runs so far make way for their configurations."""
        return in_budget(self.trials(), int(self.study.user_attrs.get(SESSION, 0)) + 1)

    def unfinished(self) -> bool:
        return bool(self._running_claims())

    def claim(self, plan: SearchPlan, worker: str, count: int = 1, *, shape: Sequence[str] = (),
              like: dict[str, Any] | None = None) -> list[Claim] | Suggestion | object:
        """Start up to ``count`` trials for ``worker``, reading the history once and creating
        them in one transaction; ``WAIT`` while the strategy waits for running trials; ``DONE``
        once the budget is claimed (or, with ``like``, once the strategy has no trial of that
        group). Trials claimed together share their values of ``shape`` (a population's
        parameters), the first one's, or ``like``'s where given."""
        if not isinstance(plan.strategy, BaseStrategy):
            return self._claim_sampled(plan, worker, count, shape, like)
        with self._lock:
            created, records = self._records()
            history = in_budget(records, self.session)
            again = retried(records, self.session)  # lost, or failed in an earlier run
            planned: list[tuple[Suggestion, int | None]] = []
            while len(planned) < count:
                step = self._next(plan, history, again, like)
                if not isinstance(step, tuple):
                    if planned:
                        break
                    return step
                planned.append(step)
                if like is None and shape:
                    like = {k: v for k, v in step[0].params.items() if k in shape}
                # Optuna numbers a study's trials in the order they are created: under the lock, the
                # next number is the next trial's.
                suggestion = step[0]
                history.append(TrialRecord(created + len(planned) - 1, suggestion.params, TrialState.RUNNING,
                                           stage=suggestion.stage, session=self.session))
            return self._start(plan, planned, worker)

    def _records(self) -> tuple[int, list[TrialRecord]]:
        """How many trials the study has created, and hpo's trials as records, oldest first.

        A claim reads the whole history, and the Ray driver claims trial by trial: so a trial
        is read again only once it is new or its state has changed (one query finds which)."""
        unfinished = [i for i, (state, _) in self._known.items() if not state.is_finished()]
        found = self.writes.states(self._study_id, max(self._known, default=-1), unfinished)
        changed = {i for i, state in found.items() if i not in self._known or self._known[i][0] is not state}
        if changed:
            # Optuna's read: the trials named, and any created after the newest one found (none
            # but what another process created meanwhile)
            for trial_id, trial in self.writes.read(self._study_id, changed, max(found)):
                record = None if trial.state is OptunaState.WAITING else to_record(trial)
                self._know(trial_id, trial.state, record)
        records = [record for _, record in self._known.values() if record is not None]
        return len(self._known), sorted(records, key=lambda r: r.number)

    def _know(self, trial_id: int, state: OptunaState, record: TrialRecord | None) -> None:
        before = self._known.get(trial_id)
        self._known[trial_id] = state, record
        if record is not None and state.is_finished() and (before is None or not before[0].is_finished()):
            self._finished.append(record)

    def finished_since(self, seen: int, *, look: bool = False) -> list[TrialRecord]:
        """The trials this store's claims read as finished, and those it finished itself, in the
        order it learnt of them, from the ``seen``-th on: what changed since a caller's last look.
        ``look``: read what other processes ended meanwhile first (one query), else no read."""
        if look:
            self._records()
        return self._finished[seen:]

    def _next(self, plan: SearchPlan, history: list[TrialRecord], again: list[TrialRecord],
              like: dict[str, Any] | None = None) -> tuple[Suggestion, int | None] | Suggestion | object:
        """The next trial after ``history`` (the trials in the budget), sharing ``like``'s values
        where given: the first configuration that runs ``again`` (taken from it), with the trial it
        runs again, before the strategy's next suggestion; else ``WAIT`` or ``DONE``.

        A configuration runs again in its own place: left to the strategy, one that failed before
        the trials that completed was drawn again only by chance (random search draws trial i from
        ``(seed, i)``, and i would count the completed trials after it), while those were drawn twice."""
        if len(history) >= plan.n_trials:
            return DONE
        if (retry := _take_again(again, like)) is not None:
            return retry
        assert isinstance(plan.strategy, BaseStrategy)
        suggestion = (plan.strategy.suggest(plan.space, history, plan.n_trials) if like is None else
                      plan.strategy.suggest_like(plan.space, history, plan.n_trials, like))
        if suggestion is None:
            return DONE
        if suggestion is WAIT:
            return WAIT
        return suggestion, None

    def _start(self, plan: SearchPlan, planned: list[tuple[Suggestion, int | None]], worker: str) -> list[Claim]:
        """The trials, each with its parameters, stage and owner, created in one transaction."""
        process = this_process()
        templates = [
            optuna.trial.create_trial(
                state=OptunaState.RUNNING, params=suggestion.params,
                distributions=distributions(plan.space, suggestion.params),
                user_attrs={CLAIM: {"stage": suggestion.stage, "worker": worker, "process": process,
                                    "retry_of": retry_of, "session": self.session}},
            )
            for suggestion, retry_of in planned
        ]
        made = self.writes.add_trials(self._study_id, templates)
        for (trial_id, number), (suggestion, _) in zip(made, planned, strict=True):
            self._know(trial_id, OptunaState.RUNNING, TrialRecord(
                number, suggestion.params, TrialState.RUNNING, stage=suggestion.stage, session=self.session,
                worker=worker))
        return [Claim(trial_id, number, suggestion.params, suggestion.stage, trial_seed(plan.seed, number), retry_of,
                      worker) for (trial_id, number), (suggestion, retry_of) in zip(made, planned, strict=True)]

    def _claim_sampled(self, plan: SearchPlan, worker: str, count: int, shape: Sequence[str],
                       like: dict[str, Any] | None) -> list[Claim] | object:
        """``claim`` for Optuna's sampler: at most the strategy's ``Sampled.at_once`` trials under
        each hold of the lock, the group the first one's."""
        claims: list[Claim] = []
        at_once = SAMPLERS[plan.strategy_name].at_once
        while len(claims) < count:
            with self._lock:
                created, records = self._records()
                budget = plan.n_trials - len(in_budget(records, self.session))
                if budget <= 0:
                    break
                again, like = self._again(records, min(count - len(claims), budget), like, shape)
                if again:  # before anything is sampled, which sees them running
                    claims += self._start(plan, again, worker)
                    continue
                try:
                    sampled, like = self._sampled(plan, created, min(count - len(claims), budget, at_once),
                                                  like, shape)
                    started = self._start(plan, sampled, worker)
                except BaseException:
                    self._mirror = None  # it may hold samples that were never created: made again next time
                    raise
                assert self._mirror is not None
                self._mirror.created([claim.number for claim in started])
                claims += started
        return claims or DONE

    def _again(self, records: list[TrialRecord], count: int, like: dict[str, Any] | None, shape: Sequence[str],
               ) -> tuple[list[tuple[Suggestion, int | None]], dict[str, Any] | None]:
        """Up to ``count`` configurations that run again (see ``retried``), sharing ``like``'s
        values of ``shape``, else the first one's; and the values they share."""
        owed = retried(records, self.session)
        if like is None and shape and owed:
            like = {k: v for k, v in owed[0].params.items() if k in shape}
        again: list[tuple[Suggestion, int | None]] = []
        while len(again) < count and (retry := _take_again(owed, like)) is not None:
            again.append(retry)
        return again, like

    def _sampled(self, plan: SearchPlan, created: int, count: int, like: dict[str, Any] | None,
                 shape: Sequence[str]) -> tuple[list[tuple[Suggestion, None]], dict[str, Any]]:
        """``count`` configurations that the strategy's Optuna sampler (``SAMPLERS``) samples one
        after another, each seeded by the number its trial will have, so that workers sampling at
        the same time draw different ones; each sees the trials sampled before it as running
        (TPE's constant liar, GP's batch acquisition). They are
        sampled in the study's mirror in memory (``StudyMirror``), brought up to date from one
        read of what changed: asking the stored study re-read its every trial for each sample,
        minutes for a population of a thousand. Trials sampled together share ``like``'s values
        of ``shape``, else the first one's (Optuna's ``PartialFixedSampler``), the rest proposed
        given them; returned with the configurations, for the claim's next ones."""
        with _optuna_on_purpose():
            if self._mirror is None:
                self._mirror = StudyMirror(self.study.directions)
            mirror = self._mirror
            mirror.follow(self.study.get_trials(deepcopy=False))
            sampled: list[tuple[Suggestion, None]] = []
            for number in range(created, created + count):
                sampler = SAMPLERS[plan.strategy_name].sampler(sampler_seed(plan.seed, number))
                params = suggest(mirror.ask(optuna.samplers.PartialFixedSampler(like, sampler) if like else sampler),
                                 plan.space)
                sampled.append((Suggestion(params), None))
                if like is None:
                    like = {k: v for k, v in params.items() if k in shape}
        assert like is not None
        return sampled, like

    def finish(self, claim: Claim, record: TrialRecord) -> TrialRecord:
        """End a claimed trial with its record; returns what the store holds: the record, or the
        trial as another process failed it meanwhile (its heartbeat looked stale)."""
        return self.finish_many([(claim, record)])[0]

    def finish_many(self, ended: Sequence[tuple[Claim, TrialRecord]]) -> list[TrialRecord]:
        """End claimed trials (a population's) in one transaction, with the reports still held
        back (``report``); for each, what the store holds, as ``finish`` says."""
        ends = [End(claim.trial_id, _TELL[record.state],
                         None if record.state is TrialState.FAILED else record.value, {RESULT: _result_attr(record)})
                for claim, record in ended]
        with self._lock:  # a trial's state is checked, then set: atomic only under a lock on SQLite
            ended_before = self.writes.end(self._held, ends)
            self._held_written()
        stored = [to_record(self.storage.get_trial(claim.trial_id)) if claim.trial_id in ended_before
                  else replace(record, session=self.session, worker=claim.worker) for claim, record in ended]
        for (claim, _), record in zip(ended, stored, strict=True):
            if claim.trial_id in self._known:  # as the study holds it now: the next claim need not read it
                self._know(claim.trial_id, _TELL[record.state], record)
        return stored

    def report(self, trial_id: int, step: int, value: float) -> None:
        """A running trial's intermediate value, for live views of the study (optuna-dashboard).
        Values are held back and written together: by the first report that comes
        ``REPORTS_EVERY_S`` or more after the first value held (so a population's members
        reporting one epoch take one transaction, not one each, however long the epoch took),
        and at the latest with the trial's end; what a killed process held back belonged to
        trials that run again."""
        if not self._held:  # the clock starts at the first value held, not at the last write
            self._held_since = time.monotonic()
        self._held.append((trial_id, step, value))
        if time.monotonic() - self._held_since >= REPORTS_EVERY_S:
            self.write_reports()

    def write_reports(self) -> None:
        """Write the reports held back, now."""
        if not self._held:
            return
        self.writes.add_reports(self._held)
        self._held_written()

    def _held_written(self) -> None:
        """The reports held back are in the study now (committed): hold the next ones afresh."""
        self._held = []

    def fail(self, trial_ids: Sequence[int], reason: str = WORKER_LOST) -> list[TrialRecord]:
        """Fail running trials whose process is gone; returns those this call failed. A trial
        that ended meanwhile, or that another process failed first, is left as it is.

        A lost trial is failed by its state alone, one write: a trial failed without a result
        of its own reads as "worker lost" (``to_record``)."""
        failed = []
        with self._lock:
            for trial_id in trial_ids:
                try:
                    if reason != WORKER_LOST:
                        self.storage.set_trial_user_attr(trial_id, RESULT, {"state": "failed", "reason": reason})
                    if not self.storage.set_trial_state_values(trial_id, OptunaState.FAIL):
                        continue
                except UpdateFinishedTrialError:
                    continue
                failed.append(to_record(self.storage.get_trial(trial_id)))
        return failed

    def running(self, worker: str | None = None) -> list[int]:
        """The ids of running trials (of one worker, if named)."""
        return [trial_id for trial_id, claim in self._running_claims().items()
                if worker is None or claim.get("worker") == worker]

    def stale(self) -> list[int]:
        """Running trials whose process died: one on this machine that has ended (at once), or
        one silent past the grace period, and still so two heartbeats after this process first
        saw it so. A live trial that merely looked stale (its machine stalled or slept, or the
        clock stepped forward) beats again in between.

        Optuna's public ``fail_stale_trials`` fails a trial at the first stale look, which would
        fail live trials after a stall; the second look needs the stale ids it reads. It looks
        at most every ``LOOK_EVERY_S`` (a driver asks before every claim), and finds none between."""
        now = time.monotonic()
        if now - self._looked_at < LOOK_EVERY_S:
            return []
        self._looked_at = now
        stale = self.writes.stale(self._study_id)
        self._stale_since = {trial_id: self._stale_since.get(trial_id, now) for trial_id in stale}
        silent = [i for i, since in self._stale_since.items() if now - since >= 2 * self.heartbeat_interval]
        return sorted({*silent, *self._ended()})

    def _ended(self) -> list[int]:
        """Running trials whose process has certainly ended (``process_ended``)."""
        running = {trial_id: claim.get("process") for trial_id, claim in self._running_claims().items()}
        # A population's trials share their process: each process is looked at once.
        ended = {process for process in set(running.values()) - {None} if process_ended(process)}
        return [trial_id for trial_id, process in running.items() if process in ended]

    def _running_claims(self) -> dict[int, dict[str, Any]]:
        """The claim of each running trial (empty for one another program started), by trial id,
        in order: one read of that attribute alone, not of every running trial whole."""
        return {trial_id: claim or {} for trial_id, claim in self.writes.running_attr(self._study_id, CLAIM).items()}

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self)

    @functools.cached_property
    def _study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.study_name)


def _take_again(owed: list[TrialRecord], like: dict[str, Any] | None) -> tuple[Suggestion, int | None] | None:
    """The first of the ``owed`` configurations that shares ``like``'s values, taken from them:
    as a suggestion, with the trial it runs again."""
    for i, trial in enumerate(owed):
        if like is None or all(trial.params.get(name) == value for name, value in like.items()):
            del owed[i]
            return Suggestion(dict(trial.params), trial.stage), trial.number
    return None


def _if_locked(path: Path, context: Any) -> None:
    if LOCKED in str(context.original_exception):
        raise locked(path, "storage")


class Heartbeat:
    """Beats for the trials this process runs, from one background thread, every
    ``heartbeat_interval`` seconds from when each is added until it is discarded."""

    def __init__(self, store: TrialStore) -> None:
        self.store = store
        self._ids: set[int] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, trial_ids: Sequence[int]) -> Iterator[None]:
        self.add(*trial_ids)
        try:
            yield
        finally:
            for trial_id in trial_ids:
                self.discard(trial_id)

    def add(self, *trial_ids: int) -> None:
        """Beat for claimed trials from now on (the claim wrote each one's first beat)."""
        with self._guard:
            self._ids.update(trial_ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="hpo-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, trial_id: int) -> None:
        with self._guard:
            self._ids.discard(trial_id)

    def close(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.store.heartbeat_interval):
            with self._guard:
                ids = list(self._ids)
            with contextlib.suppress(Exception):  # a database hiccup: the next beat comes soon
                self.store.writes.beat(ids)


def distributions(space: SearchSpace, params: dict[str, Any]) -> dict[str, BaseDistribution]:
    """Optuna's distribution of each parameter set, over the whole space (not a stage's region:
    a study holds one distribution per parameter)."""
    found: dict[str, BaseDistribution] = {}
    for name in params:
        param = space.params[name]
        if isinstance(param, CategoricalParam):
            found[name] = CategoricalDistribution(param.choices)
        elif isinstance(param, FloatParam):
            found[name] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
        else:
            found[name] = IntDistribution(param.low, param.high, log=param.log, step=param.step or 1)
    return found



def sampler_seed(search_seed: int, number: int) -> int:
    """The seed of the TPE sampler that proposes trial ``number``: the search's seed and the
    number mixed (``SeedSequence``). Consecutive seeds, as ``trial_seed`` gives, start numpy's
    generators on correlated candidates: on the HPOLib tables that doubled TPE's median regret."""
    return int(np.random.SeedSequence([search_seed, number]).generate_state(1)[0])


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask Optuna's sampler for each active parameter."""
    params: dict[str, Any] = {}
    for name, param in space.params.items():
        if param.is_active(params):
            params[name] = _ask(trial, name, distributions(space, {name: None})[name])
    return params


def _ask(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log,
                                   step=distribution.step)
    assert isinstance(distribution, IntDistribution)
    return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def to_record(trial: FrozenTrial, run_id: str = "") -> TrialRecord:
    """A stored trial as hpo sees it (``run_id``: its MLflow run, where the study names it
    apart). A failed trial whose result is not a failure of its own was failed by another
    process that found its owner gone: it reads as "worker lost"."""
    result = trial.user_attrs.get(RESULT, {})
    state = _STATES[trial.state]
    reason = result.get("reason", "")
    if state is TrialState.FAILED and (not result or result.get("state", "failed") != "failed"):
        reason = WORKER_LOST
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        state=state,
        value=trial.value if trial.state is OptunaState.COMPLETE else result.get("value"),
        stage=stage_of(trial),
        reason=reason,
        metrics=result.get("metrics", {}),
        seed=result.get("seed", 0),
        device=result.get("device", "cpu"),
        duration_s=result.get("duration_s", 0.0),
        node=result.get("node", ""),
        where=result.get("where", ""),
        traceback=result.get("traceback", ""),
        session=int(trial.user_attrs.get(CLAIM, {}).get("session", 0)),
        detail=result.get("detail", ""),
        curve=[(int(step), float(value)) for step, value in result.get("curve", [])],
        run_id=result.get("mlflow_run_id", "") or run_id,
        unread=list(result.get("unread", [])),
        worker=claimed_by(trial) or "",
    )


def claimed_by(trial: FrozenTrial) -> str | None:
    """The worker (host:pid) that claimed a stored trial."""
    return trial.user_attrs.get(CLAIM, {}).get("worker")


def stage_of(trial: FrozenTrial) -> int:
    """The coarse-to-fine stage a stored trial was claimed for."""
    return int(trial.user_attrs.get(CLAIM, {}).get("stage", 0))


def retry_of(trial: FrozenTrial) -> int | None:
    """The lost trial whose configuration a stored trial runs again."""
    return trial.user_attrs.get(CLAIM, {}).get("retry_of")


def _result_attr(record: TrialRecord) -> dict[str, Any]:
    return {
        "state": record.state.value, "reason": record.reason, "metrics": record.metrics, "value": record.value,
        "seed": record.seed, "device": record.device, "duration_s": record.duration_s, "node": record.node,
        **({"where": record.where, "traceback": record.traceback} if record.traceback else {}),
        **({"detail": record.detail} if record.detail else {}),
        **({"curve": [[step, value] for step, value in record.curve]} if record.curve else {}),
        **({"mlflow_run_id": record.run_id} if record.run_id else {}),
        **({"unread": record.unread} if record.unread else {}),
    }
