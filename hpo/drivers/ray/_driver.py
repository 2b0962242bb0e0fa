"""The Ray Tune driver: the trial loop split across Tune's parts. Its searcher claims trials
from the store, its trainable runs the objective in an actor, its callback logs each report to
MLflow and finishes the trial; Tune's schedulers stop trials early (successive halving,
Hyperband), and hpo's median rule is decided in the actor (``_median``)."""

from __future__ import annotations

import _thread
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo._errors import HpoError
from hpo._plan import SearchPlan
from hpo._trial import INTERRUPTED, TrialRecord, TrialState
from hpo.drivers._base import Driver
from hpo.drivers.ray import RayOptions
from hpo.drivers.ray._cluster import HeadWatch, connect, named_address, use_token_if_any
from hpo.drivers.ray._median import MedianTables
from hpo.drivers.ray._trainable import trainable_main
from hpo.loop import SearchListener, Started, TrialLoop, worker_name
from hpo.store import DONE, Claim
from hpo.strategies import WAIT

# Tune would otherwise write CSV, JSON and TensorBoard logs for every trial, and insist that
# every result (a failed trial's last one too) carries the metric.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# With a searcher other than its own, Tune keeps one trial pending at a time, which runs the
# trials one after another: hpo's plans need no result to suggest the next one (a new
# coarse-to-fine stage says WAIT instead), so keep as many pending as Tune does for its own.
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(16, os.cpu_count() or 1)))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

_ASK_AGAIN_S = 1.0
"""After the store answered WAIT or DONE, how long the searcher waits before asking it again
(unless a trial of this run ends first): Tune asks many times a second."""


class RayDriver(Driver):
    """Runs a search with Ray Tune on a local Ray instance or an existing cluster."""

    name = "ray"

    def __init__(self, options: RayOptions, home: Path) -> None:
        self.options = options
        self.home = home

    @property
    def device(self) -> str:
        return "cuda:0" if self.options.gpus_per_trial > 0 else "cpu"  # Ray pins each actor to its GPUs

    def start(self) -> None:
        if named_address(self.options.address) is None:
            # A local instance listens on loopback only: Ray otherwise binds and dials the
            # machine's network address even when nothing outside it takes part.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        else:
            use_token_if_any()  # before Ray reads its settings
        import ray

        connect(ray, self.options.address)

    def run(self, loop: TrialLoop, objective: Callable[..., Any], listener: SearchListener,
            population: int | str = 1) -> None:
        self.start()
        from ray import tune

        from hpo.drivers.ray._tune import FatalErrorStopper, StrategySearcher, TrackingCallback

        plan = loop.plan
        study = RayStudy(loop, listener, self.device)
        pruning = scheduler(plan)  # None for the median rule: the actors decide it
        trainable = tune.with_resources(
            tune.with_parameters(trainable_main, objective=objective, plan=plan, device=self.device,
                                 each_report=pruning is not None),
            {"cpu": self.options.cpus_per_trial, "gpu": self.options.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=plan.space.metric, mode=plan.space.direction[:3], search_alg=StrategySearcher(study),
                scheduler=pruning, num_samples=-1, max_concurrent_trials=self.options.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{plan.study_name}-{int(time.time())}", storage_path=str((self.home / "ray_results").resolve()),
                verbose=0, callbacks=[TrackingCallback(study)], stop=FatalErrorStopper(study),
                # A lost trial is not restarted by Tune (``FailureConfig``), which would repeat its
                # steps under the same run: the store fails it and the strategy plans it again.
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        # Tune logs a trial's error as a traceback, and its result grid looks for the per-trial log
        # files it was told not to write: hpo records every trial's ending itself.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        address = named_address(self.options.address)
        try:
            with HeadWatch(address or "", functools.partial(_head_lost, study, address)):
                tuner.fit()
        except KeyboardInterrupt:
            if study.fatal is None:
                raise
        finally:
            study.close()
        if study.fatal is not None:
            study.fatal_said = True  # the search's own line says it: an exit still owed says nothing more
            raise study.fatal


class RayStudy:
    """The driver-side state that Tune's searcher, callback and stopper share: the trials this
    run claimed, by Tune's trial id."""

    def __init__(self, loop: TrialLoop, listener: SearchListener, device: str) -> None:
        self.loop = loop
        self.listener = listener
        self.device = device
        self.worker = worker_name()
        self.heartbeat = loop.store.heartbeat()  # this process beats for every trial it claimed
        self.live: dict[str, Started] = {}
        self.fatal: HpoError | None = None
        self.fatal_said = False
        self._closed = False
        self._idle_since: float | None = None  # when the store last answered WAIT or DONE
        self.medians = MedianTables(loop.plan, loop.store) if loop.plan.pruner == "median" else None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A claimed trial's config; ``None`` to be asked again later; ``FINISHED`` once the
        budget is claimed and every trial of it has ended."""
        from ray.tune.search import Searcher

        if self.fatal is not None:
            return Searcher.FINISHED
        if self._idle_since is not None and time.monotonic() - self._idle_since < _ASK_AGAIN_S:
            return None
        self.loop.reap()
        batch = self.loop.claim(self.worker, self.device)
        if batch is DONE and not self.live and not self.loop.store.unfinished():
            return Searcher.FINISHED
        if batch is DONE or batch is WAIT:
            self._idle_since = time.monotonic()
            return None
        assert isinstance(batch, list)
        (started,) = batch
        self._idle_since = None
        self.live[trial_id] = started
        self.heartbeat.add(started.claim.trial_id)
        config: dict[str, Any] = {"hpo": started.claim.to_json(), "deadline": self.loop.deadline}
        if self.medians is not None:
            config["median"] = {"table": self.medians.table(started.claim.stage),
                                "key": self.medians.key(started.claim.stage), "board": self.medians.board_name}
        return config

    def close(self, reach_ray: bool = True) -> None:
        """Trials Tune left without an ending (the run stopped early): interrupted, so that
        they run again on resume; nothing stays RUNNING. Once; ``reach_ray=False`` where the
        cluster is gone (its board actor goes with it)."""
        if self._closed:
            return
        self._closed = True
        for trial_id, started in list(self.live.items()):
            del self.live[trial_id]
            self.loop.finish(started, _record(started.claim, TrialState.FAILED, reason=INTERRUPTED, device=self.device))
        self.heartbeat.close()
        if self.medians is not None and reach_ray:
            self.medians.close()

    def reported(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.live:
            reports = result.get("hpo", {})
            for step, metrics in reports.get("reports", ()):
                self.live[trial_id].run.log(step, metrics)
            if self.medians is not None and not reports.get("final"):  # sent a second or more after its start
                self.medians.trial_runs_long()

    def ended(self, trial_id: str, last: dict[str, Any] | None, error: BaseException | None) -> None:
        """Finish the trial as its trainable recorded it; as pruned where Tune's scheduler
        stopped it between two reports; as lost (and so planned again) where its actor died."""
        started = self.live.pop(trial_id, None)
        if started is None:
            return
        self.heartbeat.discard(started.claim.trial_id)
        self._idle_since = None  # a trial ended: the store may have a next one now
        report = (last or {}).get("hpo", {})
        if error is not None and _actor_died(error):
            self.loop.fail([started.claim.trial_id])
            return
        if report.get("unstarted"):  # claimed ahead, reached an actor past the search's timeout: owed a run
            self.loop.finish(started, _record(started.claim, TrialState.FAILED, reason=INTERRUPTED, device=self.device))
            return
        if error is not None:
            cause = _cause(error)
            if isinstance(cause, HpoError):  # the objective's setup failed: every trial would
                self.fatal = cause
            reason = f"{type(cause).__name__}: {cause}".strip().splitlines()[0][:500]
            record = _record(started.claim, TrialState.FAILED, reason=reason, device=self.device)
        elif report.get("final"):
            record = TrialRecord.from_json(report["record"])
        else:  # Tune's scheduler stopped it between two reports
            value = (last or {}).get(self.loop.plan.space.metric)
            record = _record(started.claim, TrialState.PRUNED, value=value, reason=self.loop.plan.pruner,
                             device=self.device, duration_s=(last or {}).get("time_total_s", 0.0),
                             node=report.get("node", ""))
        record = self.loop.finish(started, record)
        if self.medians is not None:
            self.medians.trial_ended()
        if not record.lost:
            try:
                self.listener.trial_finished(record)
            except HpoError as error:  # the search must stop (every trial fails alike): Tune stops with it
                self.fatal = error


HARD_EXIT_AFTER_S = 20.0
"""How long the search may take to unwind after its cluster's head died before it exits anyway
(Ray ends the process itself a minute after losing the head)."""


def _head_lost(study: RayStudy, address: str | None, cause: str) -> None:
    """The named cluster's head stopped answering: its running trials are closed as interrupted
    (the main thread may be stuck in Ray), the search is stopped with one line, and exits within
    ``HARD_EXIT_AFTER_S`` if it cannot unwind."""
    study.fatal = HpoError(f"the Ray cluster at {address!r} stopped answering ({cause}); its running trials are "
                           "closed as interrupted: run the search again once the cluster is back")
    study.close(reach_ray=False)
    study.loop.tracker.flush(5.0)

    def hard_exit() -> None:
        if not study.fatal_said:
            study.loop.tracker.abort_search()
            print(f"hpo: error: {study.fatal}", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(HARD_EXIT_AFTER_S, hard_exit)
    timer.daemon = True
    timer.start()
    _thread.interrupt_main()


def _record(claim: Claim, state: TrialState, *, reason: str, device: str, value: float | None = None,
            duration_s: float = 0.0, node: str = "") -> TrialRecord:
    return TrialRecord(claim.number, claim.params, state, value, claim.stage, reason, seed=claim.seed,
                       device=device, duration_s=duration_s, node=node)


def _cause(error: BaseException) -> BaseException:
    """The exception the trainable raised, out of Ray's wrapping (``RayTaskError.cause``)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause  # type: ignore[attr-defined]
    return error


def _actor_died(error: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(error, RayActorError)


def scheduler(plan: SearchPlan) -> Any | None:
    """hpo's halving pruners on Tune's schedulers (None without one, and for the median rule,
    which the actors decide: Tune's default reads no report); time is the number of reports.
    The warm-up mirrors the Optuna driver's: no decision before the warm-up's reports (plus the
    untrained step). Neither pauses a trial: a trainable without checkpoints would restart a
    paused trial from its first epoch."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    epochs = plan.space.epochs
    grace = plan.pruning.steps(epochs) + 1
    max_t = epochs + 2  # + the untrained step and the final report
    # Asynchronous successive halving (ASHA) and its HyperBand form (several brackets): unlike
    # the synchronous HyperBandScheduler they never pause a trial.
    if plan.pruner == "successive-halving":
        return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace,
                                       reduction_factor=3, brackets=1)
    if plan.pruner == "hyperband":
        return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, grace_period=grace,
                                       reduction_factor=3, brackets=3)
    return None
