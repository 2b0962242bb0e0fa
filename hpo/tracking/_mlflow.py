"""MLflow layout: one experiment per space, a parent run per search, a child run per trial."""

from __future__ import annotations

import logging
import math
import shutil
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

from hpo._errors import HpoError
from hpo.files import (
    bounded,
    cached_store,
    create_whole,
    error_line,
    fast_paths,
    port_unanswered,
    sqlite_path,
    unusable,
    writable,
)
from hpo.tracking import _writer
from hpo.tracking._runs import HasRunId, RunRef, RunWrite, point_default_experiment
from hpo.tracking._views import delete_view, log_axis_metric, write_view
from hpo.tracking._writer import Writer
from hpo.trial import TrialRecord, TrialState, how_it_ended, shown

if TYPE_CHECKING:
    from hpo.plan import SearchPlan, SearchResult

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
# logs a traceback for each database error it raises, which hpo then answers (a locked store: writes wait)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def default_tracking_uri(home: Path = DEFAULT_HOME) -> str:
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"  # the folder is made with the store (``create_whole``)


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrialRun:
    """A trial's child run, written by the tracker's background writer: created at once, its
    curves logged whenever the writer is idle (live curves) or else at the end, and finished
    with one write. The training path only queues; the writer joins what other trials queued
    meanwhile (a population's runs) into one batch.

    Parameters are written exactly as the trial ran them. Where the objective says its step 0
    is the untrained model (``step_zero_untrained``, as the built-in objectives do), step 0 is
    logged as ``initial_*``, so that its loss does not set the scale of every curve; any other
    objective's step 0 stays in its curves."""

    def __init__(self, writer: Writer, experiment_id: str, *, number: int, metric: str, tags: Mapping[str, str],
                 params: Mapping[str, Any], untrained_step_zero: bool = False,
                 log_scaled: Sequence[str] = ()) -> None:
        self.writer = writer
        self.run_id: str | None = None  # set by the writer once the run exists
        self._params = param_entries(params)
        self._untrained_step_zero = untrained_step_zero
        self._pending: list[Metric] = [Metric(log_axis_metric(name), math.log10(params[name]), _now_ms(), 0)
                                       for name in log_scaled if isinstance(params.get(name), int | float)
                                       and params[name] > 0]
        self._last_flush = time.monotonic()
        self._metric = metric
        self._last_step = 0
        writer.submit(RunWrite(self, experiment_id, name=run_name(number), start_time=_now_ms(),
                               tags=[RunTag(k, v) for k, v in tags.items()]))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        now = _now_ms()
        prefix = "initial_" if step == 0 and self._untrained_step_zero else ""
        self._pending += [Metric(prefix + name, value, now, step) for name, value in metrics.items()]
        if self._metric in metrics:
            self._last_step = step
        if time.monotonic() - self._last_flush > _FLUSH_EVERY_S and self.writer.idle:
            self.flush()

    def flush(self) -> None:
        """Queue what was logged so far (and the parameters, with the first batch)."""
        metrics, params = self._pending, self._params
        self._pending, self._params = [], []
        self._last_flush = time.monotonic()
        if metrics or params:
            self.writer.submit(RunWrite(self, metrics=metrics, params=params))

    def finish(self, record: TrialRecord, tags: Mapping[str, str] | None = None) -> None:
        """Final metrics (``final_*``, apart from the per-step series), the ranking metric, state,
        reason and duration, and ``tags``; the run's name and description say how it ended,
        its status mirrors the state."""
        self._pending += _end_metrics(record, self._metric)
        metrics, params = self._pending, self._params
        self._pending, self._params = [], []
        tags = {**(tags or {}), **_end_tags(record, self._metric, self._last_step)}
        if record.traceback:
            self.writer.submit(lambda client: client.log_text(self.run_id, record.traceback, "traceback.txt"))
        self.writer.submit(RunWrite(self, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items()],
                                    status=RUN_STATUS[record.state], end_time=_now_ms()))


def param_entries(params: Mapping[str, Any]) -> list[Param]:
    """A trial's parameters as MLflow params, exactly (``repr`` of a float round-trips)."""
    return [Param(k, repr(v) if isinstance(v, float) else str(v)) for k, v in params.items()]


def run_name(number: int, state: TrialState = TrialState.RUNNING, *, epoch: int = 0,
             value: float | None = None, metric: str = "") -> str:
    """What the runs table shows of a trial without any column chosen: ``trial-0007 val_loss=0.2314``,
    ``trial-0007 pruned at epoch 2 val_loss=0.263``, ``trial-0007 failed``."""
    name = f"trial-{number:04d}"
    if state is TrialState.FAILED:
        return f"{name} failed"
    if state is TrialState.PRUNED:
        name += " pruned" + (f" at epoch {epoch}" if epoch else "")
    return name + (f" {metric}={value:.4g}" if value is not None and metric else "")


def ranking_metric(metric: str) -> str:
    """The metric every trial's run carries, whatever its state, for sorting and plotting: a
    complete trial's value, a pruned trial's best before it was stopped."""
    return f"ranking_{metric}"


def _end_metrics(record: TrialRecord, metric: str) -> list[Metric]:
    now = _now_ms()
    values = {f"final_{name}": value for name, value in record.metrics.items()}
    if record.value is not None and record.state is not TrialState.FAILED:
        values[ranking_metric(metric)] = record.value
    values["duration_s"] = record.duration_s
    return [Metric(name, value, now, 0) for name, value in values.items()]


def _end_tags(record: TrialRecord, metric: str, epoch: int = 0) -> dict[str, str]:
    tags = {"hpo.state": record.state.value, "hpo.reason": record.reason, "hpo.node": record.node,
            "mlflow.runName": run_name(record.number, record.state, epoch=epoch, value=record.value, metric=metric),
            "mlflow.note.content": how_it_ended(record, metric)}
    if record.where:
        tags["hpo.where"] = record.where
    if record.unread:
        tags["hpo.unread_params"] = ", ".join(record.unread)
    return tags


def _end_write(run: HasRunId, record: TrialRecord, metric: str) -> RunWrite:
    """End a run as its trial ended, where the process that ran it could not (it died, or
    MLflow could not be reached)."""
    return RunWrite(run, metrics=_end_metrics(record, metric), status=RUN_STATUS[record.state], end_time=_now_ms(),
                    tags=[RunTag(k, v) for k, v in _end_tags(record, metric).items()])


SERVER_ANSWERS_S = 5.0
"""How long a tracking server's port may take to answer before the search is refused (MLflow's
own retries took four minutes to give up on a port nothing listens on)."""


def check_reachable(uri: str) -> None:
    """Refuse, in one line and within seconds, a tracking URI that is a bare path (MLflow 3 takes
    no new file stores), a server nothing answers on (``SERVER_ANSWERS_S``), or a database server
    that does not take a connection (``CONNECT_TIMEOUT_S``): MLflow retries each for minutes."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme
    if scheme in ("", "file"):
        raise HpoError(f"{uri!r} is not a database or tracking server URI (e.g. sqlite:///mlflow.db, or "
                       "http://host:5000 for a server)", argument="tracking_uri")
    if scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(bounded(uri), poolclass=sqlalchemy.pool.NullPool)
        try:
            engine.connect().close()
        except Exception as error:
            raise HpoError(f"cannot reach the MLflow store at {uri!r} ({error_line(error)})",
                           argument="tracking_uri") from None
        finally:
            engine.dispose()
    if scheme not in ("http", "https"):
        return
    cause = port_unanswered(parts.hostname or "", parts.port or (443 if scheme == "https" else 80), SERVER_ANSWERS_S)
    if cause is None:
        cause = _http_unanswered(uri)
    if cause is not None:
        raise HpoError(f"cannot reach the MLflow tracking server at {uri!r}: {cause} (is it running? `mlflow "
                       "server` starts one)", argument="tracking_uri")


def _http_unanswered(uri: str) -> str | None:
    """Why a server that took the connection gave no HTTP answer within ``SERVER_ANSWERS_S``
    (MLflow waits 120 s a request, seven times); any answer, an error status included, is one."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_ANSWERS_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return "no answer in time" if isinstance(reason, TimeoutError) else str(reason).lower()
    return None


class MlflowTracker:
    """Writes a search to MLflow; any tracking URI works, a local SQLite file by default.

    Example:
        >>> tracker = MlflowTracker(None, experiment="lr_wd")  # .hpo/mlflow.db, once started
    """

    def __init__(self, tracking_uri: str | None, experiment: str, home: Path = DEFAULT_HOME, *,
                 untrained_step_zero: bool = False, study_storage: str | None = None) -> None:
        self.tracking_uri = tracking_uri or ""
        self.study_storage = study_storage
        """The study's storage URL: trial runs are made under a lock there where MLflow's store
        has none (a tracking server), so that two processes of the search make one run a trial."""
        self.experiment_name = experiment
        self.home = home
        self.untrained_step_zero = untrained_step_zero
        """Whether the objective's step 0 is the untrained model (logged as ``initial_*``)."""
        self.study_name = ""  # set by start_search: every trial run carries it as ``hpo.study``
        self.warnings: list[str] = []
        self.log_scaled: list[str] = []  # the space's log-scaled parameters: their runs carry log10_*
        self.view_key = ""  # the search's saved view in the MLflow UI
        self.client: MlflowClient  # created by start_search: nothing is written before it
        self.writer: Writer  # the background writer of trial runs, made with the client
        self.experiment_id = ""
        self.parent_run_id = ""
        self.created_search = False  # whether start_search made the parent run (not reopened it)
        self.metric = ""  # the space's, set by start_search: what the trials' runs are ranked by

    # -- the search -------------------------------------------------------------------------
    def recorded_trials(self, study_name: str) -> int:
        """How many trial runs MLflow holds for the search of ``study_name`` (0 if none)."""
        self._connect()
        experiment = self._experiment()
        if experiment is None:
            return 0
        parent = self._search_run(experiment.experiment_id, study_name)
        if parent is None:
            return 0
        query = f"tags.`hpo.study_run` = '{parent.info.run_id}'"
        return len(self.client.search_runs([experiment.experiment_id], query, max_results=1000))

    def _search_run(self, experiment_id: str, study_name: str) -> Any:
        runs = self.client.search_runs(
            [experiment_id], f"tags.`hpo.study` = '{study_name}' and tags.`hpo.role` = 'search'", max_results=1
        )
        return runs[0] if runs else None

    def start_search(self, plan: SearchPlan, space_path: Path | None) -> None:
        """Create the parent run, or reopen the one of the same study when resuming."""
        self._connect()
        self.metric = plan.space.metric
        self.study_name = plan.study_name
        self.log_scaled = [name for name, p in plan.space.params.items() if getattr(p, "log", False)]
        self.experiment_id = self._experiment_id()
        found = self._search_run(self.experiment_id, plan.study_name)
        if found is not None:
            self.parent_run_id = found.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self.client.set_tag(self.parent_run_id, "hpo.budget", str(plan.n_trials))
        else:
            self._create_search_run(plan, space_path)
        self.view_key = write_view(self.client, self.experiment_id, plan, self.parent_run_id,
                                   ranking_metric(self.metric))

    def _create_search_run(self, plan: SearchPlan, space_path: Path | None) -> None:
        """The parent run of a new search: its plan as params, its space file as an artifact."""
        tags = {"hpo.study": plan.study_name, "hpo.role": "search", "hpo.budget": str(plan.n_trials)}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=plan.study_name)
        self.parent_run_id = run.info.run_id
        self.created_search = True
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

    def finish_search(self, result: SearchResult, trials: Sequence[TrialRecord], report: Path | None = None) -> bool:
        """After the trials' own writes: every trial of the study (``trials``) in MLflow as the
        study holds it (a worker that could not write, an outage), then the summary on the parent
        run (and the files of ``report``, a folder), closed. Waits at most ``FLUSH_LIMIT_S`` for a
        tracking server that is down; returns whether everything is written (if not, the next run
        writes it)."""
        run_id = self.parent_run_id
        self.writer.submit(lambda client: self._repair(client, trials))
        self.writer.submit(lambda client: _summary(client, run_id, result, self._run_ids(client), report))
        return self.flush()

    def run_ids(self) -> dict[int, str]:
        """Each trial's child run id, by trial number (after the writes queued so far; empty when
        MLflow cannot be reached)."""
        if not self.flush():
            return {}
        try:
            return self._run_ids(self.client)
        except Exception:
            return {}

    def _run_ids(self, client: MlflowClient) -> dict[int, str]:
        return {number: run.info.run_id for number, run in self._trial_runs(client).items()}

    def _trial_runs(self, client: MlflowClient) -> dict[int, Any]:
        """The search's trial runs, by trial number."""
        query = f"tags.`hpo.study_run` = '{self.parent_run_id}'"
        runs = client.search_runs([self.experiment_id], query, max_results=50000)
        return {int(run.data.tags["hpo.trial_number"]): run for run in runs}

    def identity(self) -> dict[str, str]:
        """Where this search is written: what another process needs to write into it."""
        return {"uri": self.tracking_uri, "experiment": self.experiment_name, "metric": self.metric,
                "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id,
                "study": self.study_name, "untrained_step_zero": str(self.untrained_step_zero),
                "log_scaled": ",".join(self.log_scaled)}

    @classmethod
    def attach(cls, identity: dict[str, str], study_storage: str | None = None) -> MlflowTracker:
        """A tracker writing into a search another process started (``identity()`` there)."""
        tracker = cls(identity["uri"], identity["experiment"], study_storage=study_storage,
                      untrained_step_zero=identity.get("untrained_step_zero") == "True")
        tracker.study_name = identity.get("study", "")
        tracker.log_scaled = [name for name in identity.get("log_scaled", "").split(",") if name]
        tracker._connect()
        tracker.experiment_id, tracker.parent_run_id = identity["experiment_id"], identity["parent_run_id"]
        tracker.metric = identity["metric"]
        return tracker

    def _connect(self) -> None:
        """The client, on first use: nothing is written before a search starts. An SQLite store is
        created whole if it is missing; one that cannot be used is refused in one line."""
        self.tracking_uri = self.tracking_uri or default_tracking_uri(self.home)
        path = sqlite_path(self.tracking_uri)
        if path is not None:
            writable(path, "tracking_uri")
            create_whole(path, _new_store, "tracking_uri")
        check_reachable(self.tracking_uri)
        try:
            self.client = MlflowClient(bounded(self.tracking_uri))
            self.client.search_experiments(max_results=1)
        except Exception as error:
            if urllib.parse.urlsplit(self.tracking_uri).scheme in ("http", "https"):
                raise HpoError(f"{self.tracking_uri!r} does not answer as an MLflow tracking server "
                               f"({error_line(error)}); check the address", argument="tracking_uri") from None
            raise unusable(path or self.tracking_uri, "MLflow store", error, "tracking_uri") from None
        self.writer = Writer(self.client, self.study_storage)

    def flush(self, limit_s: float | None = None) -> bool:
        """Wait until every write queued so far is in MLflow (at most ``limit_s``, by default
        ``FLUSH_LIMIT_S``, while the tracking server is down); returns whether they all are."""
        return self.writer.flush(_writer.FLUSH_LIMIT_S if limit_s is None else limit_s)

    def abort_search(self, trials: Sequence[TrialRecord] = ()) -> None:
        """The search stopped early (interrupted, or an error): every trial of the study
        (``trials``) in MLflow as the study holds it, as ``finish_search`` does (a process that
        failed another's lost trial may have died before its writes), and the parent run KILLED."""
        run_id = self.parent_run_id
        if trials:
            self.writer.submit(lambda client: self._repair(client, trials))
        self.writer.submit(lambda client: client.set_terminated(run_id, "KILLED"))
        self.flush()

    def discard_search(self) -> None:
        """The search stopped before its first trial, in a study it had just created: the parent
        run it made is deleted (MLflow's delete: out of every view, the store's ``gc`` ends it), and
        its saved view with it; a parent run it reopened is closed as ``abort_search`` does."""
        if not self.created_search:
            self.abort_search()
            return
        run_id, experiment_id, key = self.parent_run_id, self.experiment_id, self.view_key

        def delete(client: MlflowClient) -> None:
            client.set_terminated(run_id, "KILLED")
            if key:
                delete_view(client, experiment_id, key)
            client.delete_run(run_id)

        self.writer.submit(delete)
        self.flush()

    def tested_trial(self) -> tuple[int, dict[str, float]] | None:
        """The trial whose test score is already on the parent run, and that score (None also
        when MLflow cannot say: the test then runs again)."""
        try:
            run = self.client.get_run(self.parent_run_id)
        except Exception:
            return None
        number = run.data.tags.get("hpo.tested_trial")
        if number is None:
            return None
        scores = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
        return int(number), scores

    def warn(self, text: str) -> None:
        """A warning about the search itself (a parameter the objective never read), kept on the
        search run as ``hpo.warnings``, one a line."""
        self.warnings.append(text)
        warnings = "\n".join(self.warnings)
        self.writer.submit(lambda client: client.set_tag(self.parent_run_id, "hpo.warnings", warnings))

    def record_test(self, number: int) -> None:
        self.writer.submit(lambda client: client.set_tag(self.parent_run_id, "hpo.tested_trial", str(number)))

    # -- trials -----------------------------------------------------------------------------
    def start_trial(
        self, number: int, params: Mapping[str, Any], *, stage: int, seed: int, device: str,
        tags: Mapping[str, str] | None = None,
    ) -> TrialRun:
        tags = {**(tags or {}), **self._trial_tags(number, stage=stage, seed=seed, device=device)}
        return TrialRun(self.writer, self.experiment_id, number=number, metric=self.metric, tags=tags,
                        params={**params, "seed": seed}, untrained_step_zero=self.untrained_step_zero,
                        log_scaled=self.log_scaled)

    def _trial_tags(self, number: int, *, stage: int, seed: int, device: str) -> dict[str, str]:
        return {
            "mlflow.parentRunId": self.parent_run_id,
            "hpo.study": self.study_name,
            "hpo.study_run": self.parent_run_id,
            "hpo.trial_number": str(number),
            "hpo.stage": str(stage),
            "hpo.device": device,
            "hpo.seed": str(seed),
            "hpo.state": TrialState.RUNNING.value,
        }

    def repair(self, trials: Sequence[TrialRecord]) -> int:
        """Make MLflow agree with the study (see ``_repair``) now; returns how many runs it wrote."""
        self.flush()
        return self._repair(self.client, trials)

    def _repair(self, client: MlflowClient, trials: Sequence[TrialRecord]) -> int:
        """A finished trial whose run is missing (written while the tracking server was down, by
        a worker that died, into a store since replaced) gets one, with its final metrics; one
        left running is closed as the study says it ended. All in one batch; returns how many
        runs it wrote."""
        runs = self._trial_runs(client)
        writes: list[RunWrite] = []
        for record in trials:
            run = runs.get(record.number)
            if not record.finished or (run is not None and run.info.status != "RUNNING"
                                       and run.data.tags.get("hpo.state") == record.state.value):
                continue
            writes += self._close(record, run.info.run_id if run else None)
        self.writer.write_runs(client, writes)
        return sum(write.status is not None for write in writes)

    def _close(self, record: TrialRecord, run_id: str | None) -> list[RunWrite]:
        """The writes that end a trial's run as the study says it ended; without ``run_id``, the
        run is first made from the record alone (no curve: the study keeps none)."""
        run = RunRef(run_id)
        if run_id is not None:
            return [_end_write(run, record, self.metric)]
        tags = self._trial_tags(record.number, stage=record.stage, seed=record.seed, device=record.device)
        params = param_entries({**record.params, "seed": record.seed})
        return [RunWrite(run, self.experiment_id, name=run_name(record.number), start_time=_now_ms(), params=params,
                         tags=[RunTag(k, v) for k, v in tags.items()]), _end_write(run, record, self.metric)]

    def record_lost(self, record: TrialRecord) -> None:
        """Close the child run of a trial that died with its process (create it if the process
        died before it had one), in the writer's turn: after this process's own writes."""

        def write(client: MlflowClient) -> None:
            query = f"tags.`hpo.study_run` = '{self.parent_run_id}' and tags.`hpo.trial_number` = '{record.number}'"
            run_ids = [run.info.run_id for run in client.search_runs([self.experiment_id], query)]
            self.writer.write_runs(client, [w for run_id in run_ids or [None] for w in self._close(record, run_id)])

        self.writer.submit(write)

    # -- helpers ----------------------------------------------------------------------------
    def _experiment(self) -> Any:
        """The search's experiment, None where there is none yet; one deleted (in MLflow's
        trash: MLflow neither writes into it nor makes another of its name) is a user error."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            number = experiment.experiment_id
            restore = f"`MLFLOW_TRACKING_URI={self.tracking_uri} mlflow experiments restore -x {number}`"
            # a server's trash is emptied where its database is
            gc = "" if self.tracking_uri.startswith(("http:", "https:")) else (
                f", delete it for good (`mlflow gc --backend-store-uri {self.tracking_uri} --experiment-ids {number}`)")
            raise HpoError(f"MLflow's experiment {self.experiment_name!r} is deleted: restore it ({restore}){gc}, or "
                           "name another", argument="experiment")
        return experiment

    def _experiment_id(self) -> str:
        experiment = self._experiment()
        if experiment is not None:
            return experiment.experiment_id
        path = sqlite_path(self.tracking_uri)  # its artifacts go beside it (a file store or a server keeps its own)
        location = (path.parent / "mlartifacts" / self.experiment_name).resolve().as_uri() if path else None
        return self.client.create_experiment(self.experiment_name, artifact_location=location)


def _new_store(url: str) -> None:
    """A new MLflow SQLite store at ``url``: a copy of the one this MLflow version made once on
    this machine (its schema migrations take seconds, a copy milliseconds), its Default
    experiment's artifacts where MLflow would put them now; made in place where there is no
    cache."""
    path = sqlite_path(url)
    made = (cached_store(f"mlflow-{mlflow.__version__}", lambda url: MlflowClient(url).search_experiments())
            if fast_paths() else None)  # the copy's Default experiment is changed in MLflow's own table
    if made is None or path is None:
        MlflowClient(url).search_experiments()
        return
    shutil.copyfile(made, path)
    artifacts = append_to_uri_path(resolve_uri_if_local(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH), "0")
    point_default_experiment(path, artifacts)


def _summary(client: MlflowClient, run_id: str, result: SearchResult, run_ids: Mapping[int, str],
             report: Path | None) -> None:
    """Summary metrics, description, best run and artifacts (the files of the search's report)
    on its parent run, then close it."""
    counts = {state.value: 0 for state in TrialState if state is not TrialState.RUNNING}
    for trial in result.trials:
        if trial.finished:
            counts[trial.state.value] += 1
    metrics = {f"trials_{state}": n for state, n in counts.items()}
    tags = {"mlflow.note.content": _description(result, counts, run_ids, report is not None),
            "hpo.ended": result.stopped}
    if result.best is not None:
        metrics[f"best_{result.metric}"] = result.best.value
        client.log_dict(run_id, _best_config(result), "best_config.json")
        tags["hpo.best_trial"] = str(result.best.number)
        if result.best.number in run_ids:
            tags["hpo.best_run_id"] = run_ids[result.best.number]
    metrics.update({f"test_{k}": v for k, v in result.test_metrics.items()})
    client.log_batch(run_id, metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    if report is not None:
        for path in sorted(p for p in report.iterdir() if not p.name.startswith(".")):  # not its .drawn-from.json
            client.log_artifact(run_id, str(path), None if path.suffix == ".csv" else "report")
    client.set_terminated(run_id, "FINISHED")


def _description(result: SearchResult, counts: Mapping[str, int], run_ids: Mapping[int, str], report: bool) -> str:
    """The parent run's description, in markdown: what the search found."""
    lines = [f"**{result.study_name}**: " + ", ".join(f"{n} {state}" for state, n in counts.items()) + "."]
    best = result.best
    if best is None:
        lines.append("No trial completed: each child run's description says how it ended.")
        return "\n\n".join(lines)
    trial = f"trial {best.number}"
    if best.number in run_ids:
        link = f"#/experiments/{result.experiment_id}/runs/{run_ids[best.number]}?workflowType=machine_learning"
        trial = f"[{trial}]({link})"
    config = ", ".join(f"`{k}={shown(v)}`" for k, v in best.params.items())
    lines.append(f"Best: {trial}, {result.metric} **{best.value:.4g}**: {config}.")
    if result.test_metrics:
        lines.append("Test (evaluated once, best configuration): "
                     + ", ".join(f"{k} **{v:.4g}**" for k, v in result.test_metrics.items()) + ".")
    ranked = "every trial ranked: `leaderboard.csv`; plots: `report/`" if report else (
        f"every trial ranked, with plots: `hpo report {result.study_name}`")
    lines.append(f"Exact values: `best_config.json`; {ranked}.")
    return "\n\n".join(lines)


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
