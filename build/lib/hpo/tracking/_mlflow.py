"""MLflow layout: one experiment per space, a parent run per search, a child run per trial."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from hpo._trial import TrialRecord, TrialState
from hpo.tracking._writer import Writer

if TYPE_CHECKING:
    from hpo._plan import SearchPlan, SearchResult

DEFAULT_HOME = Path(".hpo")
RUN_STATUS = {
    TrialState.RUNNING: "RUNNING",
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAILED: "FAILED",
}
_FLUSH_EVERY_S = 2.0

for _noisy in ("alembic", "mlflow"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def default_tracking_uri(home: Path = DEFAULT_HOME) -> str:
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrialRun:
    """A trial's child run, written by the tracker's background writer: created at once, its
    curves logged whenever the writer is idle (live curves) or else at the end, and finished
    with one batch. The training path only queues."""

    def __init__(self, writer: Writer, experiment_id: str, *, name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any]) -> None:
        self.writer = writer
        self.run_id: str | None = None  # set by the writer once the run exists
        self._params = [Param(k, str(v)) for k, v in params.items()]
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

        def create(client: MlflowClient) -> None:
            self.run_id = client.create_run(experiment_id, tags=dict(tags), run_name=name).info.run_id

        writer.submit(create)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        now = _now_ms()
        self._pending += [Metric(name, value, now, step) for name, value in metrics.items()]
        if time.monotonic() - self._last_flush > _FLUSH_EVERY_S and self.writer.idle:
            self.flush()

    def flush(self) -> None:
        """Queue what was logged so far (and the parameters, with the first batch)."""
        metrics, params = self._pending, self._params
        self._pending, self._params = [], []
        self._last_flush = time.monotonic()
        if metrics or params:
            self.writer.submit(lambda client: _log_batch(client, self.run_id, metrics=metrics, params=params))

    def finish(self, record: TrialRecord, tags: Mapping[str, str] | None = None) -> None:
        """Final metrics (``final_*``, apart from the per-step series), state, reason and
        duration, and ``tags``; the run status mirrors the state."""
        now = _now_ms()
        final = {f"final_{name}": value for name, value in record.metrics.items()}
        self._pending += [
            Metric(name, value, now, 0) for name, value in {**final, "duration_s": record.duration_s}.items()
        ]
        metrics, params = self._pending, self._params
        self._pending, self._params = [], []
        tags = {**(tags or {}), "hpo.state": record.state.value, "hpo.reason": record.reason, "hpo.node": record.node}
        if record.where:
            tags["hpo.where"] = record.where

        def finish(client: MlflowClient) -> None:
            _log_batch(client, self.run_id, metrics=metrics, params=params,
                       tags=[RunTag(k, v) for k, v in tags.items()])
            if record.traceback:
                client.log_text(self.run_id, record.traceback, "traceback.txt")
            client.set_terminated(self.run_id, RUN_STATUS[record.state])

        self.writer.submit(finish)


def _log_batch(client: MlflowClient, run_id: str | None, *, metrics: Sequence[Metric] = (),
               params: Sequence[Param] = (), tags: Sequence[RunTag] = ()) -> None:
    """One ``log_batch`` where MLflow's limits allow (1000 metrics, 100 params, 100 tags), else several."""
    assert run_id is not None, "the run is created by an earlier write"
    while metrics or params or tags:
        client.log_batch(run_id, metrics=metrics[:1000], params=params[:100], tags=tags[:100])
        metrics, params, tags = metrics[1000:], params[100:], tags[100:]


class MlflowTracker:
    """Writes a search to MLflow; any tracking URI works, a local SQLite file by default.

    Example:
        >>> tracker = MlflowTracker(None, experiment="lr_wd")  # .hpo/mlflow.db, once started
    """

    def __init__(self, tracking_uri: str | None, experiment: str, home: Path = DEFAULT_HOME) -> None:
        self.tracking_uri = tracking_uri or ""
        self.experiment_name = experiment
        self.home = home
        self.client: MlflowClient  # created by start_search: nothing is written before it
        self.writer: Writer  # the background writer of trial runs, made with the client
        self.experiment_id = ""
        self.parent_run_id = ""

    # -- the search -------------------------------------------------------------------------
    def start_search(self, plan: SearchPlan, space_path: Path | None) -> None:
        """Create the parent run, or reopen the one of the same study when resuming."""
        self._connect()
        self.experiment_id = self._experiment_id()
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`hpo.study` = '{plan.study_name}' and tags.`hpo.role` = 'search'",
            max_results=1,
        )
        if runs:
            self.parent_run_id = runs[0].info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self.client.set_tag(self.parent_run_id, "hpo.budget", str(plan.n_trials))
            return
        tags = {"hpo.study": plan.study_name, "hpo.role": "search", "hpo.budget": str(plan.n_trials)}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=plan.study_name)
        self.parent_run_id = run.info.run_id
        params = {
            "space": plan.space.name,
            "strategy": plan.strategy_name,
            "driver": plan.driver_name,
            "n_trials": plan.n_trials,
            "seed": plan.seed,
            "pruner": plan.pruner,
            **({"pruning": plan.pruning.model_dump_json(exclude={"pruner"})} if plan.pruner != "none" else {}),
            "objective": plan.objective_name,
            "metric": plan.space.metric,
            "direction": plan.space.direction,
            **{f"fixed.{k}": v for k, v in plan.space.fixed.items()},
        }
        self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)) for k, v in params.items()])
        if space_path is not None:
            self.client.log_artifact(self.parent_run_id, str(space_path))
        else:
            self.client.log_dict(self.parent_run_id, plan.space.model_dump(mode="json"), "space.json")

    def finish_search(self, result: SearchResult) -> None:
        """Summary metrics and artifacts on the parent run, then close it."""
        self.flush()
        run_id = self.parent_run_id
        counts = {state.value: 0 for state in TrialState if state is not TrialState.RUNNING}
        for trial in result.trials:
            if trial.finished:
                counts[trial.state.value] += 1
        metrics = {f"trials_{state}": n for state, n in counts.items()}
        if result.best is not None:
            metrics[f"best_{result.metric}"] = result.best.value
            self.client.log_dict(run_id, _best_config(result), "best_config.json")
            self.client.set_tag(run_id, "hpo.best_trial", str(result.best.number))
        metrics.update({f"test_{k}": v for k, v in result.test_metrics.items()})
        now = _now_ms()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.log_text(run_id, _leaderboard_csv(result.trials), "leaderboard.csv")
        self.client.set_terminated(run_id, "FINISHED")

    def identity(self) -> dict[str, str]:
        """Where this search is written: what another process needs to write into it."""
        return {"uri": self.tracking_uri, "experiment": self.experiment_name,
                "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id}

    @classmethod
    def attach(cls, identity: dict[str, str]) -> MlflowTracker:
        """A tracker writing into a search another process started (``identity()`` there)."""
        tracker = cls(identity["uri"], identity["experiment"])
        tracker._connect()
        tracker.experiment_id, tracker.parent_run_id = identity["experiment_id"], identity["parent_run_id"]
        return tracker

    def _connect(self) -> None:
        """The client, on first use: nothing is written before a search starts."""
        self.tracking_uri = self.tracking_uri or default_tracking_uri(self.home)
        self.client = MlflowClient(self.tracking_uri)
        self.writer = Writer(self.client)

    def flush(self) -> None:
        """Wait until every trial write queued so far is in MLflow."""
        self.writer.flush()

    def abort_search(self) -> None:
        """The search stopped early (interrupted, or an error): the parent run is KILLED."""
        self.flush()
        self.client.set_terminated(self.parent_run_id, "KILLED")

    def tested_trial(self) -> tuple[int, dict[str, float]] | None:
        """The trial whose test score is already on the parent run, and that score."""
        run = self.client.get_run(self.parent_run_id)
        number = run.data.tags.get("hpo.tested_trial")
        if number is None:
            return None
        scores = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
        return int(number), scores

    def record_test(self, number: int) -> None:
        self.client.set_tag(self.parent_run_id, "hpo.tested_trial", str(number))

    # -- trials -----------------------------------------------------------------------------
    def start_trial(
        self, number: int, params: Mapping[str, Any], *, stage: int, seed: int, device: str,
        tags: Mapping[str, str] | None = None,
    ) -> TrialRun:
        tags = {
            **(tags or {}),
            "mlflow.parentRunId": self.parent_run_id,
            "hpo.study_run": self.parent_run_id,
            "hpo.trial_number": str(number),
            "hpo.stage": str(stage),
            "hpo.device": device,
            "hpo.seed": str(seed),
            "hpo.state": TrialState.RUNNING.value,
        }
        return TrialRun(self.writer, self.experiment_id, name=f"trial-{number:04d}", tags=tags,
                        params={**params, "seed": seed})

    def trial_run_ids(self, number: int) -> list[str]:
        """The child run of trial ``number`` (none if its process died before creating it)."""
        self.flush()  # a run this process asked for exists once its writes are done
        query = f"tags.`hpo.study_run` = '{self.parent_run_id}' and tags.`hpo.trial_number` = '{number}'"
        return [run.info.run_id for run in self.client.search_runs([self.experiment_id], query)]

    def record_lost(self, record: TrialRecord) -> None:
        """Close the child run of a trial that died with its process, or create it if missing."""
        run_ids = self.trial_run_ids(record.number)
        if not run_ids:
            run = self.start_trial(
                record.number, record.params, stage=record.stage, seed=record.seed, device=record.device
            )
            run.finish(record)
            return
        for run_id in run_ids:
            self.writer.submit(lambda client, run_id=run_id: _close(client, run_id, record))

    # -- helpers ----------------------------------------------------------------------------
    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri:
            location = (self.home / "mlartifacts" / self.experiment_name).resolve().as_uri()
        return self.client.create_experiment(self.experiment_name, artifact_location=location)


def _close(client: MlflowClient, run_id: str, record: TrialRecord) -> None:
    """End a run another process started and could not finish (it died)."""
    tags = [RunTag("hpo.state", record.state.value), RunTag("hpo.reason", record.reason),
            RunTag("hpo.node", record.node)]
    _log_batch(client, run_id, metrics=[Metric("duration_s", record.duration_s, _now_ms(), 0)], tags=tags)
    client.set_terminated(run_id, RUN_STATUS[record.state])


def _best_config(result: SearchResult) -> dict[str, Any]:
    assert result.best is not None
    return {
        "trial": result.best.number,
        "params": result.best.params,
        "fixed": result.space.fixed,
        result.metric: result.best.value,
        "metrics": result.best.metrics,
        "test": result.test_metrics,
    }


def _leaderboard_csv(trials: Sequence[TrialRecord]) -> str:
    names = sorted({name for t in trials for name in t.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", "reason", "stage", "value", *names])
    for t in trials:
        writer.writerow([t.number, t.state.value, t.reason, t.stage, t.value, *(t.params.get(n) for n in names)])
    return out.getvalue()
