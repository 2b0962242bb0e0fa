"""The Optuna driver: a persistent study, strategy suggestions enqueued, Optuna's pruners."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from hpo._errors import HpoError
from hpo._trial import TrialRecord, TrialState
from hpo.drivers._base import (
    INTERRUPTED,
    WORKER_LOST,
    BaseDriver,
    SearchListener,
    execute_trial,
    in_budget,
    is_lost,
    space_changed,
)
from hpo.spaces import CategoricalParam, FloatParam, SearchSpace
from hpo.strategies import WAIT, BaseStrategy

if TYPE_CHECKING:
    from hpo._search import SearchPlan
    from hpo.dispatch import DeviceSlot
    from hpo.tracking import MlflowTracker

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def _heartbeats_on_purpose() -> Iterator[None]:
    """Heartbeats let a study outlive a dead worker; Optuna flags them as experimental and as
    meant for ``Study.optimize``, while hpo runs its own ask/tell loop with them on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        yield

STAGE = "hpo.stage"  # set when the suggestion is enqueued
PLAN = "hpo.plan"  # the plan and its MLflow run, for workers that join from elsewhere
RETRY_OF = "hpo.retry_of"  # the lost trial whose configuration this one runs again
WORKER = "hpo.worker"  # host:pid of the process running the trial
RESULT = "hpo.result"  # reason, metrics, seed, device, duration: set once, when the trial ends
_DONE = object()
_STATES = {
    OptunaState.RUNNING: TrialState.RUNNING,
    OptunaState.COMPLETE: TrialState.COMPLETE,
    OptunaState.PRUNED: TrialState.PRUNED,
    OptunaState.FAIL: TrialState.FAILED,
}
_TELL = {ours: theirs for theirs, ours in _STATES.items() if ours is not TrialState.RUNNING}


def default_storage_url(home: Path) -> str:
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'optuna.db').resolve()}"


class OptunaDriver(BaseDriver):
    """Runs a search as an Optuna study in persistent storage; rerunning resumes it.

    Args:
        storage: An Optuna RDB URL (``sqlite:///...``, ``postgresql://...``); by default
            ``.hpo/optuna.db`` in the working directory.
        slots: Device slots for a pool of worker processes (``hpo.dispatch.plan_slots``);
            with more than one, trials run in that many long-lived workers at once; with one
            (or none: the CPU), in this process.
        heartbeat_interval: Seconds between a running trial's heartbeats; a trial silent for
            ``grace_period`` seconds, and still so two heartbeats later, belonged to a process
            that died, and is failed as "worker lost" (then run again, at most ``MAX_RETRIES``
            times).
    """

    name = "optuna"

    def __init__(
        self,
        storage: str | None = None,
        *,
        home: Path = Path(".hpo"),
        slots: list[DeviceSlot] | None = None,
        heartbeat_interval: int = 5,
        grace_period: int = 20,
    ) -> None:
        if storage is not None and "://" not in storage:
            raise HpoError(f"--storage: {storage!r} is not a database URL (e.g. sqlite:///study.db)")
        if grace_period <= heartbeat_interval:
            raise ValueError(f"{grace_period=} must exceed {heartbeat_interval=}")
        self.storage_url = storage
        self.home = home
        self.slots = slots or []
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.context: Any = None  # what the objective's setup returned in this process
        self._stale_since: dict[int, float] = {}  # trial id -> when this process first saw it stale

    @property
    def device(self) -> str:
        """Where trials run in this process (a pool's parent tests the best configuration
        there): its first slot's device, or the CPU."""
        return self.slots[0].device if self.slots else "cpu"

    # -- study ------------------------------------------------------------------------------
    def check(self, plan: SearchPlan) -> None:
        study = self.open_study(plan, create=False)
        if study is None:
            return
        fingerprint = study.user_attrs.get("hpo.space_fingerprint")
        if fingerprint not in (None, plan.space.fingerprint):
            raise space_changed(plan)

    def open_study(self, plan: SearchPlan, create: bool = True) -> optuna.Study | None:
        """The study (created if ``create`` and missing); its space is set on creation."""
        url = self.storage_url or default_storage_url(self.home)
        try:
            with _heartbeats_on_purpose():
                storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period
                )
        except Exception as error:
            raise HpoError(f"--storage: cannot open {url}: {type(error).__name__}: {error}".splitlines()[0]) from None
        if not create:
            try:
                return optuna.load_study(study_name=plan.study_name, storage=storage,
                                         sampler=_sampler(plan), pruner=_pruner(plan.pruner))
            except KeyError:
                return None
        study = optuna.create_study(
            storage=storage,
            study_name=plan.study_name,
            direction=plan.space.direction,
            sampler=_sampler(plan),
            pruner=_pruner(plan.pruner),
            load_if_exists=True,
        )
        if "hpo.space_fingerprint" not in study.user_attrs:
            study.set_user_attr("hpo.space_fingerprint", plan.space.fingerprint)
        return study

    # -- loop -------------------------------------------------------------------------------
    def run(
        self,
        plan: SearchPlan,
        objective: Callable[..., Any],
        tracker: MlflowTracker,
        listener: SearchListener,
    ) -> list[TrialRecord]:
        study = self.open_study(plan)
        assert study is not None
        study.set_user_attr(PLAN, plan_attr(plan, tracker))  # what `hpo worker` joins with
        self.fail_stale(study, tracker)
        listener.resumed(counted(study.get_trials(deepcopy=False)))
        self.serve(study, plan, objective, tracker, listener, wait_for_others=True)
        return counted(study.get_trials(deepcopy=False))

    def join(self, plan: SearchPlan, objective: Callable[..., Any], tracker: MlflowTracker,
             listener: SearchListener) -> None:
        """Work on a study another process runs (``hpo worker``), until its budget is claimed."""
        study = self.open_study(plan)
        assert study is not None
        self.serve(study, plan, objective, tracker, listener, wait_for_others=False)

    def serve(self, study, plan, objective, tracker, listener, *, wait_for_others: bool) -> None:  # type: ignore[no-untyped-def]
        """Run trials here, warm, or in a pool of worker processes when there are several slots."""
        if len(self.slots) > 1:
            from hpo.dispatch import WorkerPool

            WorkerPool(self, plan, objective, tracker).run(study, listener)
            return
        self.context = set_up(objective, self.device)
        self.work(study, plan, objective, tracker, listener, wait_for_others=wait_for_others)

    def work(self, study, plan, objective, tracker, listener, *, wait_for_others: bool) -> None:  # type: ignore[no-untyped-def]
        """Claim and run trials until the budget is claimed (and, if asked, finished)."""
        while True:
            self.fail_stale(study, tracker)
            claim = self._claim(study, plan)
            if claim is _DONE:
                history = counted(study.get_trials(deepcopy=False))
                if not wait_for_others or all(t.finished for t in history):
                    return
                time.sleep(1.0)  # another process is still finishing trials of this budget
            elif claim is WAIT:
                time.sleep(0.5)  # the next stage waits for trials running elsewhere
            else:
                listener.trial_finished(self._run_trial(plan, objective, tracker, study, claim))

    def _claim(self, study: optuna.Study, plan: SearchPlan) -> Any:
        """The next trial, started in the study; ``WAIT``; or ``_DONE`` when the budget is
        claimed. Under a lock, so that workers never claim the same point or one too many."""
        with self._claim_lock(study):
            trials = study.get_trials(deepcopy=False)
            records = [to_record(t) for t in trials if t.state is not OptunaState.WAITING]
            history = in_budget(records)
            waiting = len(records) < len(trials)
            if len(history) >= plan.n_trials and not waiting:
                return _DONE
            if not waiting and isinstance(plan.strategy, BaseStrategy):
                suggestion = plan.strategy.suggest(plan.space, history, plan.n_trials)
                if suggestion is None:
                    return _DONE
                if suggestion is WAIT:
                    return WAIT
                attrs: dict[str, Any] = {STAGE: suggestion.stage}
                lost = [r for r in records if is_lost(r) and r.params == suggestion.params]
                if lost:
                    attrs[RETRY_OF] = lost[-1].number
                study.enqueue_trial(suggestion.params, user_attrs=attrs)
            with _heartbeats_on_purpose():
                otrial = study.ask()
            otrial.set_user_attr(WORKER, worker_name(os.getpid()))
            return otrial

    def _claim_lock(self, study: optuna.Study) -> contextlib.AbstractContextManager[Any]:
        """A lock file beside an SQLite storage (one machine); a PostgreSQL advisory lock
        (every machine on the database); other databases are claimed without a lock."""
        url = self.storage_url or default_storage_url(self.home)
        if url.startswith("sqlite:///"):
            return _FileLock(Path(url.removeprefix("sqlite:///") + ".claim.lock"))
        if url.startswith("postgresql"):
            return _advisory_lock(study._storage._backend.engine, study.study_name)
        return contextlib.nullcontext()

    def _run_trial(self, plan, objective, tracker, study, otrial) -> TrialRecord:  # type: ignore[no-untyped-def]
        params = suggest(otrial, plan.space)
        stage = int(otrial.user_attrs.get(STAGE, 0))
        retry_of = otrial.user_attrs.get(RETRY_OF)

        def should_prune(step: int, value: float) -> str | None:
            otrial.report(value, step)
            return plan.pruner if otrial.should_prune() else None

        try:
            with get_heartbeat_thread(otrial._trial_id, study._storage):
                record = execute_trial(
                    plan, objective, tracker, number=otrial.number, params=params, stage=stage,
                    device=self.device, should_prune=should_prune, context=self.context,
                    tags={"hpo.retry_of": str(retry_of)} if retry_of is not None else None,
                )
        except KeyboardInterrupt:
            otrial.set_user_attr(RESULT, {"reason": INTERRUPTED})
            study.tell(otrial, state=OptunaState.FAIL)
            raise
        otrial.set_user_attr(RESULT, _result_attr(record))  # one write: each is a transaction
        study.tell(otrial, record.value if record.state is TrialState.COMPLETE else None, state=_TELL[record.state])
        return record

    def fail_stale(self, study: optuna.Study, tracker: MlflowTracker) -> None:
        """Trials whose heartbeat stopped: their process died. A trial is failed only when it
        is still stale two heartbeats after this process first saw it so; a live trial that
        merely looked stale (its machine stalled, or the clock stepped forward) beats again
        in between."""
        now = time.monotonic()
        stale = study._storage._get_stale_trial_ids(study._study_id)
        self._stale_since = {trial_id: self._stale_since.get(trial_id, now) for trial_id in stale}
        dead = [trial_id for trial_id, since in self._stale_since.items() if now - since >= 2 * self.heartbeat_interval]
        self.fail_lost(study, tracker, dead)

    def fail_worker(self, study: optuna.Study, tracker: MlflowTracker, worker_id: str,
                    reason: str = WORKER_LOST) -> None:
        """The running trials of a worker process known to be gone."""
        running = study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,))
        owned = [t._trial_id for t in running if t.user_attrs.get(WORKER) == worker_id]
        self.fail_lost(study, tracker, owned, reason)

    def fail_lost(self, study: optuna.Study, tracker: MlflowTracker, trial_ids: list[int],
                  reason: str = WORKER_LOST) -> None:
        """Fail trials as lost ("worker lost", or "interrupted") and close their child runs
        likewise (creating a run for a trial that died before it had one): every trial keeps
        exactly one run."""
        if not trial_ids:
            return
        storage = study._storage
        runs = tracker.trial_runs()
        for trial_id in trial_ids:
            storage.set_trial_user_attr(trial_id, RESULT, {"reason": reason})
            if not storage.set_trial_state_values(trial_id, OptunaState.FAIL):
                continue  # it ended after all
            record = to_record(storage.get_trial(trial_id))
            tracker.record_lost(record, runs.get(record.number, []))


class _FileLock:
    """An exclusive ``flock`` on a file: one process at a time on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


@contextlib.contextmanager
def _advisory_lock(engine: Any, name: str) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock keyed by the study's name."""
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def worker_name(pid: int) -> str:
    """How a trial's ``hpo.worker`` attribute names the process running it: host:pid."""
    return f"{socket.gethostname()}:{pid}"


def set_up(objective: Callable[..., Any], device: str) -> Any:
    """What the objective's optional ``setup(device)`` returns. Its failure ends the search:
    every trial would fail alike."""
    if not hasattr(objective, "setup"):
        return None
    try:
        return objective.setup(device)
    except Exception as error:
        raise HpoError(f"--objective: its setup on {device} failed: {type(error).__name__}: {error}") from error


def plan_attr(plan: SearchPlan, tracker: MlflowTracker) -> dict[str, Any]:
    """The plan as data in the study, with where it is tracked: a joining worker rebuilds it."""
    return {
        "space": plan.space.model_dump(mode="json"), "strategy": plan.strategy.name, "seed": plan.seed,
        "n_trials": plan.n_trials, "pruner": plan.pruner, "objective": plan.objective_name,
        "divergence_guard": plan.divergence_guard, "tracking_uri": tracker.tracking_uri,
        "experiment": tracker.experiment_name, "experiment_id": tracker.experiment_id,
        "parent_run_id": tracker.parent_run_id,
    }


def suggest(otrial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask Optuna for each active parameter (the enqueued value when there is one)."""
    params: dict[str, Any] = {}
    for name, param in space.params.items():
        if not param.is_active(params):
            continue
        if isinstance(param, CategoricalParam):
            params[name] = otrial.suggest_categorical(name, param.choices)
        elif isinstance(param, FloatParam):
            params[name] = otrial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
        else:
            params[name] = otrial.suggest_int(name, param.low, param.high, step=param.step or 1, log=param.log)
    return params


def to_record(trial: FrozenTrial) -> TrialRecord:
    result = trial.user_attrs.get(RESULT, {})
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        state=_STATES[trial.state],
        value=trial.value if trial.state is OptunaState.COMPLETE else result.get("value"),
        stage=int(trial.user_attrs.get(STAGE, 0)),
        reason=result.get("reason", ""),
        metrics=result.get("metrics", {}),
        seed=result.get("seed", 0),
        device=result.get("device", "cpu"),
        duration_s=result.get("duration_s", 0.0),
        node=result.get("node", ""),
    )


def _result_attr(record: TrialRecord) -> dict[str, Any]:
    return {
        "reason": record.reason,
        "metrics": record.metrics,
        "value": record.value,
        "seed": record.seed,
        "device": record.device,
        "duration_s": record.duration_s,
        "node": record.node,
    }


def counted(trials: list[FrozenTrial]) -> list[TrialRecord]:
    """The study's trials that take a place in the budget (see ``in_budget``)."""
    return in_budget(to_record(t) for t in trials if t.state is not OptunaState.WAITING)


def _sampler(plan: SearchPlan) -> optuna.samplers.BaseSampler:
    if plan.strategy_name == "tpe":
        return optuna.samplers.TPESampler(seed=plan.seed)
    # Planning strategies enqueue every parameter; this only covers nothing-left cases.
    return optuna.samplers.RandomSampler(seed=plan.seed)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, reduction_factor=3)
    return optuna.pruners.NopPruner()
