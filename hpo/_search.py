"""``hpo.search``: validate everything, run the driver through the trial loop, record the
result, test the best once. Engines, Optuna and MLflow are imported only once the search is
known to be valid."""

from __future__ import annotations

import dataclasses
import difflib
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo._errors import HpoError
from hpo._objectives import fingerprint, resolve_objective, unknown_parameters
from hpo._settings import DEFAULT_SPACE, SearchSettings, parse_population
from hpo.drivers import Driver, DriverOptions, driver_options
from hpo.files import StoreLocked
from hpo.loop import POPULATION_NOTICE, Listeners, SearchListener
from hpo.plan import SearchPlan, SearchResult, differences, pruning_for
from hpo.pruning import make_pruner
from hpo.spaces import SearchSpace, direction_doubt, load_space, resolve_space_path, space_of
from hpo.strategies import make_strategy
from hpo.trial import (
    OPTUNAS,
    RAY_REPORTED,
    RAY_TRAIN_REPORTED,
    SUGGESTED,
    WORKER_LOST,
    Trial,
    TrialRecord,
    TrialState,
    stop_on_signals,
    trial_seed,
    trials_text,
)

if TYPE_CHECKING:
    from hpo.store import StudySummary, TrialStore
    from hpo.tracking import MlflowTracker



@dataclass
class PreparedSearch:
    """A validated search, ready to run: nothing has been written anywhere yet."""

    plan: SearchPlan
    objective: Callable[..., Any]
    driver: Driver
    store: TrialStore
    tracker: MlflowTracker
    space_path: Path | None
    settings: SearchSettings
    """How it runs, as given (the plan holds what they resolved to)."""
    objective_fingerprint: str | None = None
    warnings: tuple[str, ...] = ()
    """What looks wrong in the space before any trial ran (a misspelt fixed value)."""
    ran_on: str = field(default="", init=False)
    """The study the last ``run`` went on: under ``new_study``, the fresh one's name."""

    def run(self, listener: SearchListener | None = None) -> SearchResult:
        """Run the search; Ctrl-C and SIGTERM stop it with its running trials closed as
        interrupted (``KeyboardInterrupt``, ``Terminated``), to run again on resume."""
        with stop_on_signals():
            return self._run(_listener(listener))

    def _run(self, listener: SearchListener) -> SearchResult:
        from hpo.loop import TrialLoop
        from hpo.store import in_budget, owed_again

        timeout = self.settings.timeout
        deadline = None if timeout is None else self.driver.clock() + timeout  # reaching a cluster counts
        self.driver.start()  # a cluster that cannot be reached is refused before anything is written
        plan, store, tracker = self.plan, self.store, self.tracker
        if self.settings.new_study:
            plan, store = self._fresh_study(tracker)
        self.ran_on = plan.study_name
        listener = FailureWatch(SpaceWatch(listener, plan, tracker), plan)
        store.check(plan, self.objective_fingerprint, keep=self.settings.keep_study)
        if store.exists():
            _check_resume(store, plan, listener)
        # MLflow first: a study that exists is in the store before any of its trials is in MLflow.
        if (recorded := tracker.recorded_trials(plan.study_name)) and not store.exists():
            raise HpoError(f"study {plan.study_name!r} is not in {store.url}, but MLflow holds {recorded} trial "
                           "runs of its search: bring the study back, or start a fresh study with new_study "
                           "(--new-study)", argument="storage")
        started = False
        try:
            with store.locked():  # runs started at once: one search run in MLflow, a session of the study each
                tracker.start_search(plan, self.space_path)
                started = True
                store.open(plan, tracker.identity(), self.objective_fingerprint)
        except BaseException:
            if started:  # undone outside the lock, which discarding the study takes again
                _stop_early(store, tracker, None)
            raise
        try:
            loop = TrialLoop(plan, store, tracker, listener=listener, deadline=deadline, clock=self.driver.clock)
            lost = loop.reap()  # trials of a process killed on this machine: known at once
            if repaired := tracker.repair(store.trials()):
                runs = "1 trial run" if repaired == 1 else f"{repaired} trial runs"
                listener.notice(f"MLflow: {runs} written again from the study (they were missing or left running)")
            history = store.trials()
            listener.resumed(in_budget(history, store.session))
            if lost:
                listener.notice(_left_running(lost))
            owed = owed_again(history, store.session)
            if failed := owed["failed"]:
                listener.notice(f"{trials_text(failed)} that failed in an earlier run of study {plan.study_name!r} "
                                f"{'runs' if failed == 1 else 'run'} again (the objective may have been fixed since)")
            if interrupted := owed["lost"] - len(lost):  # those lost just now are named above
                listener.notice(f"{trials_text(interrupted)} interrupted or lost in an earlier run of study "
                                f"{plan.study_name!r} {'runs' if interrupted == 1 else 'run'} again")
            for warning in self.warnings:
                listener.notice(f"warning: {warning}")
                tracker.warn(warning)
            self.driver.run(loop, self.objective, self.settings.population)
            # Trials that ended before MLflow's writer had made their runs are named now; this
            # process's view of the study (Optuna caches ended trials) is named alike.
            run_ids = tracker.run_ids()
            store.name_runs(run_ids)
            trials = [t if t.run_id else dataclasses.replace(t, run_id=run_ids.get(t.number, ""))
                      for t in store.counted()]
            stopped = ""
            if loop.out_of_time and len(trials) < plan.n_trials:
                stopped = (f"timeout: no trial started after {timeout:g} s, {len(trials)} of {plan.n_trials} "
                           f"trials done; run the search again{self._on_its_study()} to continue")
            store.record_ending(stopped)
        except BaseException as error:
            _stop_early(store, tracker, error)
            raise
        result = SearchResult(plan.space, trials, plan.study_name, storage=store.url, tracking_uri=tracker.tracking_uri,
                              experiment_id=tracker.experiment_id, experiment=tracker.experiment_name,
                              view_key=tracker.view_key, parent_run_id=tracker.parent_run_id, stopped=stopped)
        if self.settings.evaluate_test and result.best is not None and hasattr(self.objective, "test"):
            result.test_metrics = _test_once(self.objective, result.best, tracker, plan, self.driver.device)
            store.record_test(result.test_metrics)
        if self.settings.report:
            result.report = _write_report(store, tracker, result, run_ids)
        result.tracked = tracker.finish_search(result, store.trials(), result.report and result.report.parent)
        return result

    def _on_its_study(self) -> str:
        """How a rerun finds the study this run went on, where the same call would start another."""
        if not self.settings.new_study:
            return ""
        return f" on study {self.ran_on!r} (study_name, --study; not new_study, which starts another)"

    def resume_hint(self) -> str:
        """How the command line resumes the search after this run: the same command, or, where it
        started a fresh study (``--new-study``, which would start another), one naming it."""
        if self.settings.new_study and self.ran_on:
            return f"run it again with --study {self.ran_on} in place of --new-study"
        return "run the same command again"

    def _fresh_study(self, tracker: MlflowTracker) -> tuple[SearchPlan, TrialStore]:
        """The plan and store of the first study name taken neither in the store nor in MLflow:
        NAME, NAME-2, NAME-3..."""
        from hpo.store import TrialStore

        name, number = self.plan.study_name, 1
        store = self.store
        while store.exists() or tracker.recorded_trials(name):
            number += 1
            store = TrialStore(self.store.url, f"{self.plan.study_name}-{number}",
                               heartbeat_interval=self.store.heartbeat_interval, grace_period=self.store.grace_period)
            name = store.study_name
        return dataclasses.replace(self.plan, study_name=name), store


def prepare(
    objective: str | Callable[..., Any] | None = None,
    space: str | Path | SearchSpace | Mapping[str, Any] = DEFAULT_SPACE,
    **settings: Any,
) -> PreparedSearch:
    """Check everything a user can get wrong, before anything is written; ``settings`` are the
    fields of ``SearchSettings`` (see ``search``)."""
    given = SearchSettings.of(objective=objective, **settings)
    space_path = None
    if isinstance(space, Mapping):
        space = space_of(space)
    elif isinstance(space, str | Path):
        space_path = resolve_space_path(space)
        space = load_space(space)
    elif not isinstance(space, SearchSpace):
        raise HpoError(f"takes a space's name, a YAML path, a mapping as a space file holds or a SearchSpace, got "
                       f"{type(space).__name__}", argument="space")
    options = driver_options(given.driver)
    planner = make_strategy(given.strategy, given.seed, space)
    try:
        function, objective_name = resolve_objective(given.objective, space.objective,
                                                     space_path.parent if space_path else None)
    except HpoError as error:
        if given.objective is not None or not space.objective:
            raise
        raise HpoError(f"{space_path or 'space'}: objective: {error.message}") from None  # the space named it
    check_population(given.population, function, objective_name)
    plan = SearchPlan(
        space=space,
        strategy=planner,
        n_trials=given.n_trials,
        study_name=given.study_name
        or f"{space.name}-{objective_name.rpartition(':')[2]}-{planner.name}-seed{given.seed}",
        objective_name=objective_name,
        driver_name=options.name,
        pruning=pruning_for(space, given.pruner, given.warmup_steps, given.warmup_trials),
        seed=given.seed,
        divergence_guard=given.divergence_guard,
        trial_timeout=given.trial_timeout if given.trial_timeout is not None else space.timeout,
    )
    if plan.trial_timeout is not None and not options.time_limits:
        raise HpoError(f"the {options.name} driver does not time trials out; the optuna driver does",
                       argument="trial_timeout")
    engine = options.make(given.home)
    from hpo.store import TrialStore, default_storage_url
    from hpo.tracking import MlflowTracker

    storage = given.storage or default_storage_url(given.home)
    return PreparedSearch(
        plan=plan,
        objective=function,
        driver=engine,
        store=TrialStore(storage, plan.study_name),
        tracker=MlflowTracker(given.tracking_uri, given.experiment or space.name, home=given.home,
                              untrained_step_zero=bool(getattr(function, "step_zero_untrained", False)),
                              study_storage=storage),
        space_path=space_path,
        settings=given,
        objective_fingerprint=fingerprint(function, objective_name),
        warnings=(*([doubt] if (doubt := direction_doubt(space)) else []), *unknown_parameters(space, objective_name),
                  *([short] if (short := plan.short_of_budget()) else [])),
    )


def check_population(population: int | str, objective: Any, objective_name: str) -> int | str:
    """A population size the objective can honour, made a number, or ``"auto"``."""
    try:
        size = parse_population(population)
    except ValueError as error:
        raise HpoError(str(error), argument="population") from None
    if size != "auto" and int(size) > 1 and not hasattr(objective, "population"):
        raise HpoError(f"objective {objective_name!r} cannot train populations (it has no population(params, "
                       "trial) method); population auto trains it one trial at a time", argument="population")
    return size


def search(
    objective: str | Callable[..., Any] | None = None,
    space: str | Path | SearchSpace | Mapping[str, Any] = DEFAULT_SPACE,
    *,
    listener: SearchListener | None = None,
    quiet: bool = False,
    summary: bool = False,
    **options: Any,
) -> SearchResult:
    """Search ``space`` for the best configuration of ``objective``; resumes a known study.

    Every keyword argument but ``listener``, ``quiet`` and ``summary`` is a field of
    ``hpo.SearchSettings``, checked there (a misspelt one is named), and a flag of ``hpo search``.

    Args:
        objective: ``f(params, trial)`` returning the metric (or a dict holding it); a
            built-in name; ``"module:function"``; or ``None`` for the space's default.
        space: A space name (``"lr_wd"``), a YAML path, a mapping as a space file holds
            (``{"metric": "loss", "direction": "minimize", "params": {...}}``), or a ``SearchSpace``.
        strategy: ``auto`` (default: coarse-to-fine for one or two searched parameters, ``tpe`` for
            more), ``grid``, ``random``, ``coarse-to-fine``, ``tpe`` or ``gp``, or a strategy.
        n_trials: Trials in the study in all (40); a rerun adds only what is missing.
        driver: ``"optuna"`` (default) or ``"ray"``, or the engine's options:
            ``hpo.OptunaOptions(workers=4)``, ``hpo.RayOptions(gpus_per_trial=0.25)``.
        pruner: ``none``, ``median``, ``successive-halving`` or ``hyperband`` (with the space's
            warm-up), or a ``hpo.Pruning``.
        warmup_steps: Reports before a pruner judges a trial [the space's; a fifth of its epochs].
        warmup_trials: Finished trials the median rule needs first [the space's; 5].
        seed: Seeds the strategy and, through it, every trial.
        storage: The trial store, an Optuna storage URL; ``.hpo/optuna.db`` by default.
        tracking_uri: MLflow tracking URI; ``.hpo/mlflow.db`` by default.
        experiment: MLflow experiment; the space's name by default.
        study_name: Names the study; a search with the same name resumes it.
        divergence_guard: End a trial whose loss turns NaN or explodes (pruned, "diverged").
        evaluate_test: Score the best configuration once with the objective's ``test``.
        report: Write the search's report as it ends (``result.report``; ``hpo.report`` writes it later).
        home: The folder of the default stores (``.hpo``).
        new_study: Start a fresh study (the name followed by -2, -3...) instead of resuming one.
        keep_study: Resume the study even though the objective's source changed since it ran.
        trial_timeout: Seconds (or ``"30m"``) a trial may run before it fails as ``timeout`` [the space's ``timeout``].
        timeout: Seconds (or ``"2h"``) after which no new trial starts (running ones finish, the study says why it
            ended); running the search again continues it.
        population: Trials trained together as one stacked model, where the objective offers
            it (``population(params, trial)``, as the built-in ones do); ``"auto"`` (default)
            picks the size from the device, or one at a time for an objective that does not
            (and on the Ray driver); ``1``: one at a time.
        listener: Hears how the search goes (``SearchListener``): trials starting and ending, notices.
        quiet: Show nothing while it runs; by default a progress bar (a live one in a notebook), with
            the line saying what a resumed study already holds and any warning, on standard error.
        summary: Print the leaderboard, the best configuration and its test score at the end, as
            ``hpo search`` does.

    Example:
        >>> def objective(params, trial):
        ...     for step in range(10):
        ...         trial.report(step, loss=(params["lr"] - 0.01) ** 2 / (step + 1))
        ...     return (params["lr"] - 0.01) ** 2
        >>> result = hpo.search(objective, "lr_wd", n_trials=5)  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
    """
    listener = _listener(listener)
    prepared = prepare(objective, space, **options)
    if quiet:
        result = prepared.run(listener)
    else:
        from hpo.reporting._terminal import progress_shown

        with progress_shown(prepared.plan) as bar:
            result = prepared.run(Listeners(bar, listener))
    if summary:
        from rich.console import Console

        from hpo.reporting._terminal import print_summary

        print_summary(result, Console())
    return result


def report(study_name: str | None = None, storage: str | None = None, out: str | Path | None = None, *,
           home: str | Path = Path(".hpo")) -> Path:
    """Write the report of a past search (plots, ranked leaderboard, one HTML page) from its study
    alone, offline; returns the page's path. ``study_name`` defaults to the storage's newest study,
    ``out`` to ``HOME/reports/STUDY``: a folder for the page, its plots and ``leaderboard.csv``,
    or a ``.html`` file (not a folder already) for the page alone: its plots are inside.

    Example:
        >>> hpo.report("lr_wd-mnist1d_mlp-coarse-to-fine-seed0")  # doctest: +SKIP
        PosixPath('.hpo/reports/lr_wd-mnist1d_mlp-coarse-to-fine-seed0/report.html')
    """
    from hpo.reporting import write_report
    from hpo.store import TrialStore, default_storage_url

    home, out = Path(home), None if out is None else Path(out)
    url = storage or default_storage_url(home)
    study_name = _known_study(study_name, url, argument=None)  # `hpo report STUDY` takes it as it is, no flag
    page = out if out is not None and out.suffix.lower() in (".html", ".htm") and not out.is_dir() else None
    folder = (page.parent if page else out) or home / "reports" / study_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HpoError(f"cannot make the folder {str(folder)!r}: {error.strerror or error}",
                       argument="out" if out else None) from None
    store = TrialStore(url, study_name)
    if page is None:
        return write_report(store, folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".hpo-report-") as drawn:
        shutil.move(write_report(store, Path(drawn)), page)
    return page


def studies(storage: str | None = None, *, home: str | Path = Path(".hpo")) -> list[StudySummary]:
    """The searches' studies in ``storage`` (by default ``HOME/optuna.db``), oldest first: each
    one's plan as saved, the trials its budget counts, its best value and last activity."""
    from hpo.store import default_storage_url, study_summaries

    url = storage or default_storage_url(Path(home))
    if not (found := study_summaries(url)):
        raise HpoError(f"no study in {url}: run a search first", argument="storage")
    return found


def _known_study(study_name: str | None, url: str, argument: str | None = "study_name") -> str:
    """``study_name`` (None: the storage's newest study), once the storage is known to hold it;
    else one line with the name closest to it, or the names it has."""
    from hpo.store import study_names

    names = study_names(url)
    if not names:
        raise HpoError(f"no study in {url}: run a search first", argument="storage")
    if study_name is None:
        return names[-1]
    if study_name not in names:
        close = difflib.get_close_matches(study_name, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"it has {', '.join(map(repr, names[-5:]))}"
        raise HpoError(f"no study {study_name!r} in {url}: {hint}", argument=argument)
    return study_name


def join(
    study_name: str,
    storage: str,
    *,
    driver: str | DriverOptions = "optuna",
    population: int | str = "auto",
    listener: SearchListener | None = None,
) -> int:
    """Join a running search from another machine: claim and run trials of ``study_name`` in
    ``storage``, with the plan saved there, until its budget is claimed. Returns how many
    trials this call ran."""
    return prepare_join(study_name, storage, driver=driver, population=population).run(listener)


@dataclass
class PreparedJoin:
    """A search to join, checked and ready: ``plan`` is the one saved with its study."""

    plan: SearchPlan
    store: TrialStore
    tracking: dict[str, str]
    """Where the search records in MLflow, as saved with its study."""
    engine: Driver
    objective: Callable[..., Any]
    population: int | str

    def run(self, listener: SearchListener | None = None) -> int:
        """Claim and run the study's trials here until its budget is claimed; how many ran here.
        Ctrl-C and SIGTERM stop it as they stop a search: its running trials closed as interrupted."""
        from hpo.loop import TrialLoop
        from hpo.tracking import MlflowTracker

        counter = _Counting(FailureWatch(_listener(listener), self.plan))
        tracker = MlflowTracker.attach(self.tracking, study_storage=self.store.url)
        counter.resumed(self.store.counted())
        try:
            with stop_on_signals():
                self.engine.join(TrialLoop(self.plan, self.store, tracker, listener=counter), self.objective,
                                 self.population)
        finally:
            tracker.flush()
        return counter.count


def prepare_join(study_name: str, storage: str, *, driver: str | DriverOptions = "optuna",
                 population: int | str = "auto") -> PreparedJoin:
    """``join``, checked (the study, its plan, objective and population) and ready to run."""
    from hpo.drivers.optuna import OptunaOptions
    from hpo.drivers.optuna._driver import OptunaDriver
    from hpo.store import TrialStore

    options = driver_options(driver)
    if not isinstance(options, OptunaOptions):
        raise HpoError("joining a search runs its trials with the Optuna engine", argument="driver")
    store = TrialStore(storage, _known_study(study_name, storage))
    saved_plan, tracking = store.saved()
    plan = SearchPlan.from_json(saved_plan)
    objective, _ = resolve_objective(plan.objective_name, None)
    return PreparedJoin(plan, store, tracking, OptunaDriver(options), objective,
                        check_population(population, objective, plan.objective_name))


def _listener(listener: Any) -> SearchListener:
    """The listener given (a quiet one for None); anything else is refused in one line, an
    Optuna-style callback function among them."""
    if listener is None:
        return SearchListener()
    if not isinstance(listener, SearchListener):
        raise HpoError(f"takes an hpo.SearchListener (subclass it and override trial_finished, running, notice), "
                       f"got {type(listener).__name__}", argument="listener")
    return listener


def _check_resume(store: TrialStore, plan: SearchPlan, listener: SearchListener) -> None:
    """Resume a study only as it ran: another driver, strategy, seed or pruner is refused in one
    line naming it, as is a budget below what is done; a larger budget is said."""
    saved = store.saved_plan()
    if saved is None:
        return
    if changed := differences(saved, plan):
        argument, was, now = changed[0]
        raise HpoError(f"study {plan.study_name!r} ran with {was}, not {now}: resume it as it ran, or start "
                       "another study with new_study (--new-study) or study_name (--study)", argument=argument)
    done = sum(t.finished for t in store.in_next_run())
    if done > plan.n_trials:
        raise HpoError(f"study {plan.study_name!r} has {done} trials done, more than {plan.n_trials}: nothing to "
                       f"run; a budget above {done} extends it", argument="n_trials")
    if done and saved.get("n_trials", plan.n_trials) != plan.n_trials:
        listener.notice(f"Study {plan.study_name!r}: its budget goes from {saved['n_trials']} to {plan.n_trials} "
                        "trials")


def _test_once(function: Any, best: TrialRecord, tracker: MlflowTracker, plan: SearchPlan,
               device: str) -> dict[str, float]:
    """The test-set score of the best configuration, computed once per best trial, retrained
    with its seed on the kind of device its trial ran on, with what the objective's setup gives."""
    from hpo.dispatch import usable_device
    from hpo.loop import set_up

    known = tracker.tested_trial()
    if known is not None and known[0] == best.number:
        return known[1]
    device = usable_device(device)
    trial = Trial(best.number, seed=trial_seed(plan.seed, best.number), device=device,
                  context=set_up(function, device))
    scores = {k: float(v) for k, v in function.test({**plan.space.fixed, **best.params}, trial).items()}
    tracker.record_test(best.number)
    return scores


EVERY_TRIAL_WOULD = ("its reports had no", OPTUNAS, RAY_REPORTED, RAY_TRAIN_REPORTED)
"""How the reasons of a failure every trial would repeat begin: the search stops at the first."""


class FailureWatch(Listeners):
    """Stops a search whose first trials all fail the same way: every trial would (a misnamed
    parameter, a metric the objective does not return), and the budget would go on it. One line
    says why, and where in the user's code; a trial that succeeds first ends the watch, so
    sporadic failures only fail their trial."""

    def __init__(self, inner: SearchListener, plan: SearchPlan, first: int = 3) -> None:
        super().__init__(inner)
        self.plan = plan
        self.first = min(first, plan.n_trials)
        self.failed: list[TrialRecord] | None = []  # None once a trial did not fail like the others

    def resumed(self, trials: list[TrialRecord]) -> None:
        """A study resumed with trials that completed (or were pruned) is known not to fail every
        trial: its first trials now are often the configurations that failed before, run again."""
        super().resumed(trials)
        if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
            self.failed = None

    def trial_finished(self, trial: TrialRecord) -> None:
        super().trial_finished(trial)
        if self.failed is None or trial.lost:
            return
        if trial.state is not TrialState.FAILED or any(t.reason != trial.reason for t in self.failed):
            self.failed = None
            return
        self.failed.append(trial)
        if len(self.failed) >= self.first or trial.reason.startswith(EVERY_TRIAL_WOULD):
            raise HpoError(self.explain(trial))

    def explain(self, trial: TrialRecord) -> str:
        where = f"{trial.where}: " if trial.where else ""
        runs = "the first trial" if len(self.failed or []) == 1 else f"the first {len(self.failed or [])} trials"
        return f"{where}{trial.reason}{self.hint(trial)} ({runs} failed so; the search stops)"

    def hint(self, trial: TrialRecord) -> str:
        space = self.plan.space
        if trial.reason.startswith("KeyError: "):
            key = trial.reason.removeprefix("KeyError: ").strip("'\"")
            known = [*space.params, *space.fixed]
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                guess = f"; did you mean {close[0]!r}?" if close else ""
                return f" — the space has {', '.join(space.params)}" + (
                    f" (fixed: {', '.join(space.fixed)})" if space.fixed else "") + guess
        if trial.reason.startswith(SUGGESTED) and (asked := re.search(r"params\['([^']+)'\]", trial.reason)):
            name = asked.group(1)
            return "" if name in space.params else f" — the space has no {name!r}: add that entry to it"
        if trial.reason.startswith("objective returned no "):
            return f" — return the space's metric {space.metric!r}, or a dict holding it"
        if trial.reason.startswith("its reports had no "):
            return f" — report {space.metric!r}, or name the space's metric after what the objective reports"
        return ""


class SpaceWatch(Listeners):
    """Warns once, after the first trial that completed, of the parameters its objective never
    read: searched, they change nothing; fixed, they are likely misspelt. In the terminal and on
    the search run; each trial's run names them too (``hpo.unread_params``)."""

    def __init__(self, inner: SearchListener, plan: SearchPlan, tracker: MlflowTracker) -> None:
        super().__init__(inner)
        self.plan, self.tracker = plan, tracker
        self.warned = False
        self.said_population = False

    def trial_finished(self, trial: TrialRecord) -> None:
        super().trial_finished(trial)
        if self.warned or trial.state is not TrialState.COMPLETE:
            return
        self.warned = True
        searched = [name for name in trial.unread if name in self.plan.space.params]
        fixed = [name for name in trial.unread if name not in self.plan.space.params]
        said = []
        if searched:
            its = "its values change" if len(searched) == 1 else "their values change"
            said.append(f"searched {_names(searched)} never read by the objective (trial {trial.number}): "
                        f"{its} nothing")
        if fixed:
            said.append(f"fixed {_names(fixed)} never read by the objective (trial {trial.number})")
        said.extend(self._idle_pruner(trial))
        for text in said:
            warning = f"{self.plan.space.name}: {text}"
            self.notice(f"warning: {warning}")
            self.tracker.warn(warning)

    def _idle_pruner(self, trial: TrialRecord) -> list[str]:
        """The pruner's warm-up outlasts what the trial reported: it would stop no such trial."""
        pruner = make_pruner(self.plan.pruning, self.plan.space, self.plan.study_name)
        if pruner is None or not trial.curve:
            return []
        first, last = pruner.rule.first_step, max(step for step, _ in trial.curve)
        if last >= first:
            return []
        return [f"the {pruner.name} pruner judges no trial before step {first} (its warm-up), and trial "
                f"{trial.number} reported steps up to {last}: it stops no trial that reports as long "
                "(--warmup-steps, or warmup_steps under the space's pruning:, sets the warm-up)"]

    def notice(self, text: str) -> None:
        """Passed on; the first word on populations (smaller than asked, or none) is also kept on
        the search run, whichever process said it."""
        if text.startswith(POPULATION_NOTICE) and not self.said_population:
            self.said_population = True
            self.tracker.warn(text)
        super().notice(text)


def _stop_early(store: TrialStore, tracker: MlflowTracker, error: BaseException | None) -> None:
    """A search stopped by ``error``: a study it created and that never started a trial is
    deleted, with its search run (nothing of it stays behind); otherwise MLflow agrees with the
    study as it stands and the search run is closed as KILLED."""
    try:
        if store.discard_unstarted():
            tracker.discard_search()
            return
    except Exception:  # the storage is what failed: the search run is closed below all the same
        pass
    tracker.abort_search(_study_as_it_stands(store, error) if error is not None else [])


def _study_as_it_stands(store: TrialStore, error: BaseException) -> list[TrialRecord]:
    """The study's trials, for MLflow to agree with as the search stops early; none where the
    study cannot be read now (another process keeps it locked, its database is gone)."""
    if isinstance(error, StoreLocked):
        return []
    try:
        return store.trials()
    except Exception:
        return []


def _left_running(lost: list[TrialRecord]) -> str:
    numbers = ", ".join(str(trial.number) for trial in lost)
    if len(lost) == 1:
        return f"trial {numbers} was left running by a process that has ended: failed as {WORKER_LOST!r}"
    return f"trials {numbers} were left running by processes that have ended: failed as {WORKER_LOST!r}"


def _names(names: list[str]) -> str:
    return ("parameter " if len(names) == 1 else "parameters ") + ", ".join(map(repr, names)) + (
        " is" if len(names) == 1 else " are")


class _Counting(Listeners):
    """Passes every event on, counting the trials that finished."""

    def __init__(self, inner: SearchListener) -> None:
        super().__init__(inner)
        self.count = 0

    def trial_finished(self, trial: TrialRecord) -> None:
        self.count += 1
        super().trial_finished(trial)


def _write_report(store: TrialStore, tracker: MlflowTracker, result: SearchResult,
                  run_ids: Mapping[int, str]) -> Path | None:
    """The search's report (``report.html`` and its plots) in ``reports/STUDY/`` beside the
    study's home; None, with a warning, if it cannot be drawn: the search itself is done."""
    from hpo.reporting import write_report

    try:
        return write_report(store, tracker.home / "reports" / result.study_name, run_ids=run_ids,
                            test_metrics=result.test_metrics)
    except Exception as error:  # a plot that fails must not fail hours of search
        warnings.warn(f"hpo: the search report could not be written: {type(error).__name__}: {error}",
                      stacklevel=2)
        return None
