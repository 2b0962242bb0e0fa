"""The Ray Tune driver: the same plans on a Ray cluster, Tune's schedulers, hpo's MLflow layout.

Every Ray import of ``hpo`` lives in this file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError
from hpo._trial import DivergenceGuard, Trial, TrialRecord, TrialState, run_objective, trial_seed
from hpo.dispatch._slots import usable_device
from hpo.drivers._base import WORKER_LOST, BaseDriver, SearchListener, in_budget, space_changed
from hpo.strategies import WAIT, BaseStrategy

if TYPE_CHECKING:
    from hpo._search import SearchPlan
    from hpo.tracking import MlflowTracker, TrialRun

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


class TrialJournal:
    """The Ray driver's study storage: one JSON line per trial start and end, append-only.

    A rerun reads it to resume: ended trials are the history; a trial that started and never
    ended died with its process, and is recorded as failed ("worker lost") and planned again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: str, record: TrialRecord) -> None:
        self._write({"event": event, **record.to_json()})

    def _write(self, line: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as journal:
            journal.write(json.dumps(line) + "\n")
            journal.flush()
            os.fsync(journal.fileno())

    def check_space(self, plan: SearchPlan) -> None:
        """A journal belongs to one space: refuse to resume it with another."""
        if not self.path.exists():
            return
        first = json.loads(self.path.read_text().splitlines()[0])
        if first.get("fingerprint") != plan.space.fingerprint:
            raise space_changed(plan)

    def open(self, plan: SearchPlan) -> None:
        self._write({"event": "study", "fingerprint": plan.space.fingerprint})

    def read(self) -> tuple[list[TrialRecord], list[TrialRecord]]:
        """Ended trials, and trials that started without ending."""
        started: dict[int, TrialRecord] = {}
        ended: dict[int, TrialRecord] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                data = json.loads(line)
                if data["event"] in ("start", "end"):
                    record = TrialRecord.from_json(data)
                    (started if data["event"] == "start" else ended)[record.number] = record
        lost = [r for n, r in sorted(started.items()) if n not in ended]
        return [ended[n] for n in sorted(ended)], lost


def _trainable(config: dict[str, Any], *, objective: Callable[..., Any], plan: SearchPlan, device: str) -> None:
    """Runs in a Tune actor: one trial of the objective, every report forwarded to Tune."""
    from ray import tune

    device = usable_device(device)
    metric = plan.space.metric
    node = _node_id()

    def forward(step: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "hpo": {"step": step, "metrics": metrics, "node": node}})

    trial = Trial(
        config["number"], seed=trial_seed(plan.seed, config["number"]), device=device, stage=config["stage"],
        metric=metric, on_report=forward, guard=DivergenceGuard() if plan.divergence_guard else None,
    )
    started = time.perf_counter()
    outcome = run_objective(objective, {**plan.space.fixed, **config["params"]}, trial, metric)
    final = {
        "final": True, "state": outcome.state.value, "reason": outcome.reason, "value": outcome.value,
        "metrics": outcome.metrics, "device": device, "node": node, "duration_s": time.perf_counter() - started,
    }
    tune.report({**({metric: outcome.value} if outcome.value is not None else {}), "hpo": final})


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class _RayStudy:
    """The driver-side state that Tune's searcher and callback share."""

    def __init__(self, plan: SearchPlan, tracker: MlflowTracker, journal: TrialJournal,
                 history: list[TrialRecord], listener: SearchListener, device: str, next_number: int) -> None:
        self.plan = plan
        self.tracker = tracker
        self.journal = journal
        self.history = history  # ended trials that count, then live ones as they start
        self.listener = listener
        self.device = device
        self.next_number = next_number
        self.live: dict[str, TrialRecord] = {}  # Tune trial id -> the trial as planned
        self.runs: dict[str, TrialRun] = {}

    def plan_next(self, trial_id: str, params: dict[str, Any] | None) -> dict[str, Any] | str | None:
        from ray.tune.search import Searcher

        if len(self.history) + len(self.live) >= self.plan.n_trials:
            return Searcher.FINISHED
        stage = 0
        if params is None:
            assert isinstance(self.plan.strategy, BaseStrategy)
            suggestion = self.plan.strategy.suggest(
                self.plan.space, [*self.history, *self.live.values()], self.plan.n_trials
            )
            if suggestion is None:
                return Searcher.FINISHED
            if suggestion is WAIT:
                return None
            params, stage = suggestion.params, suggestion.stage
        number = self.next_number
        self.next_number += 1
        record = TrialRecord(number, params, TrialState.RUNNING, stage=stage,
                             seed=trial_seed(self.plan.seed, number), device=self.device)
        self.live[trial_id] = record
        return {"params": params, "number": number, "stage": stage}

    def started(self, trial_id: str) -> None:
        record = self.live[trial_id]
        self.journal.append("start", record)
        self.runs[trial_id] = self.tracker.start_trial(
            record.number, record.params, stage=record.stage, seed=record.seed, device=record.device
        )

    def reported(self, trial_id: str, result: dict[str, Any]) -> None:
        hpo = result.get("hpo", {})
        if trial_id in self.runs and not hpo.get("final"):
            self.runs[trial_id].log(hpo["step"], hpo["metrics"])

    def ended(self, trial_id: str, last: dict[str, Any] | None, error: str | None) -> None:
        if trial_id not in self.live:
            return
        if trial_id not in self.runs:  # it failed before it started: it still gets its run
            self.started(trial_id)
        planned = self.live.pop(trial_id)
        hpo = (last or {}).get("hpo", {})
        if error is not None:
            state, reason, value, metrics = TrialState.FAILED, error.strip().splitlines()[-1][:500], None, {}
        elif hpo.get("final"):
            state, reason, value, metrics = TrialState(hpo["state"]), hpo["reason"], hpo["value"], hpo["metrics"]
        else:  # Tune's scheduler stopped it between two reports
            value = (last or {}).get(self.plan.space.metric)
            state, reason, metrics = TrialState.PRUNED, self.plan.pruner, {}
        record = TrialRecord(
            planned.number, planned.params, state, value, planned.stage, reason, metrics, planned.seed,
            hpo.get("device", planned.device), hpo.get("duration_s", (last or {}).get("time_total_s", 0.0)),
            node=hpo.get("node", ""),
        )
        self.runs.pop(trial_id).finish(record)
        self.journal.append("end", record)
        self.history.append(record)
        self.listener.trial_finished(record)


class RayDriver(BaseDriver):
    """Runs a search with Ray Tune on a local Ray instance or an existing cluster.

    Args:
        address: An existing cluster (``ray://...`` or ``host:port``); a local instance if None.
        cpus_per_trial, gpus_per_trial: Resources of each trial; fractions of a GPU pack several
            trials on one (0.25: four).
        home: Where the trial journal (resume) and Tune's experiment folders live.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                 home: Path = Path(".hpo"), max_concurrent: int | None = None) -> None:
        if cpus_per_trial <= 0:
            raise HpoError(f"--cpus-per-trial: must be > 0, got {cpus_per_trial}")
        if gpus_per_trial < 0:
            raise HpoError(f"--gpus-per-trial: must be >= 0, got {gpus_per_trial}")
        self.address = address
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.home = home
        self.max_concurrent = max_concurrent

    def journal(self, plan: SearchPlan) -> TrialJournal:
        return TrialJournal(self.home / "ray" / f"{plan.study_name}.jsonl")

    def check(self, plan: SearchPlan) -> None:
        self.journal(plan).check_space(plan)

    @property
    def device(self) -> str:
        return "cuda:0" if self.gpus_per_trial > 0 else "cpu"  # Ray pins each actor to its GPUs

    def run(self, plan: SearchPlan, objective: Callable[..., Any], tracker: MlflowTracker,
            listener: SearchListener) -> list[TrialRecord]:
        if self.address is None:
            # A local instance listens on loopback only: Ray otherwise binds and dials the
            # machine's network address even when nothing outside it takes part.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        from ray import tune

        from hpo.drivers._ray_tune import StrategySearcher, TrackingCallback

        self._connect(ray)
        journal = self.journal(plan)
        if not journal.path.exists():
            journal.open(plan)
        history, lost = journal.read()
        runs = tracker.trial_runs()
        for record in lost:  # died with the process that ran them
            failed = dataclasses.replace(record, state=TrialState.FAILED, reason=WORKER_LOST)
            tracker.record_lost(failed, runs.get(record.number, []))
            journal.append("end", failed)
            history.append(failed)
        counted = in_budget(history)
        listener.resumed(counted)
        if len(counted) >= plan.n_trials:
            return history
        next_number = max((t.number for t in history), default=-1) + 1
        study = _RayStudy(plan, tracker, journal, list(counted), listener, self.device, next_number)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, objective=objective, plan=plan, device=self.device),
            {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=plan.space.metric, mode=plan.space.direction[:3], search_alg=StrategySearcher(study),
                scheduler=_scheduler(plan), num_samples=-1, max_concurrent_trials=self.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{plan.study_name}-{int(time.time())}", storage_path=str((self.home / "ray_results").resolve()),
                verbose=0, callbacks=[TrackingCallback(study)],
            ),
        )
        # Tune's result grid looks for the per-trial log files it was told not to write.
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        tuner.fit()
        return in_budget([*history, *study.history[len(counted):]])

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, ignore_reinit_error=True)
        except (ConnectionError, ValueError, RuntimeError) as error:
            message = f"--ray-address: cannot reach a Ray cluster at {self.address!r}: {error}"
            raise HpoError(message.splitlines()[0]) from None


def _scheduler(plan: SearchPlan) -> Any:
    """hpo's pruner names on Tune's schedulers; time is the number of reports. The settings
    mirror the Optuna driver's: no decision before the third report (step 2), and median
    stopping only once five trials can be compared."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

    max_t = int(plan.space.fixed.get("epochs", 100)) + 2  # + the untrained step and the final report
    if plan.pruner == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=3, min_samples_required=5)
    # Asynchronous successive halving (ASHA) and its HyperBand form (several brackets): unlike
    # the synchronous HyperBandScheduler they never pause a trial, which a function trainable
    # without checkpoints would have to restart from its first epoch.
    if plan.pruner == "successive-halving":
        return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, grace_period=3,
                                       reduction_factor=3, brackets=1)
    if plan.pruner == "hyperband":
        return AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t, grace_period=3,
                                       reduction_factor=3, brackets=3)
    return FIFOScheduler()
