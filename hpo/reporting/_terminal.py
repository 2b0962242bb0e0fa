"""The terminal's view of a search: its progress line, then the end-of-search summary (the data
first, testable, then drawn with rich)."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlencode

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar as RichBar
from rich.table import Column, Table
from rich.text import Text

from hpo.loop import SearchListener
from hpo.plan import SearchPlan, SearchResult
from hpo.spaces import direction_sign
from hpo.trial import TrialRecord, TrialState, by_state, ranking, shown, trials_text

if TYPE_CHECKING:
    from hpo.store import StudySummary


class ProgressBar(SearchListener):
    """Trials done, pruned and failed, and the best value so far, while the search runs; full
    at ``runnable`` trials where the search has fewer than its budget (a grid's points)."""

    def __init__(self, progress: Any, n_trials: int, metric: str, direction: str, study: str = "",
                 joined: bool = False, runnable: int | None = None) -> None:
        self.progress = progress
        self.n_trials = n_trials
        self.study = study
        self.joined = joined
        """A worker's: it counts the trials run here, after one line on the study as it joined it."""
        self.metric = metric
        self.sign = direction_sign(direction)
        self.counts = {state: 0 for state in TrialState}
        self.ended_in_this_run = 0
        self.best: float | None = None
        total = None if joined else runnable or n_trials
        self.task = progress.add_task("worker" if joined else "search", total=total, status="")

    def resumed(self, trials: list[TrialRecord]) -> None:
        self.progress.start()
        running = sum(t.state is TrialState.RUNNING for t in trials)
        done = len(trials) - running
        if self.joined:
            self.progress.console.print(f"Joining study {self.study!r}: {done} of its {trials_text(self.n_trials)} "
                                        f"done ({by_state(trials)}), {running} running", highlight=False,
                                        soft_wrap=True)
        elif trials:
            for trial in trials:
                self._count(trial)
            elsewhere = ""
            if running:
                elsewhere = f", {running} running elsewhere or left by a process that stopped (run again)"
            self.progress.console.print(f"Resuming study {self.study!r}: {done} of its {trials_text(self.n_trials)} "
                                        f"done ({by_state(trials)}){elsewhere}; --new-study starts a fresh one",
                                        highlight=False, soft_wrap=True)
        self._draw()

    def trial_finished(self, trial: TrialRecord) -> None:
        self.ended_in_this_run += 1
        self._count(trial)
        self._draw()

    def ended_elsewhere(self, trials: list[TrialRecord]) -> None:
        """A search's bar counts the study's trials wherever they ran (a worker's, its own)."""
        if not self.joined:
            self.ended_in_this_run += len(trials)
            for trial in trials:
                self._count(trial)
            self._draw()

    def notice(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, soft_wrap=True)

    def _count(self, trial: TrialRecord) -> None:
        self.counts[trial.state] += 1
        if trial.state is not TrialState.COMPLETE or trial.value is None:
            return
        if self.best is None or self.sign * trial.value < self.sign * self.best:
            self.best = trial.value

    def _draw(self) -> None:
        done = sum(n for state, n in self.counts.items() if state is not TrialState.RUNNING)
        best = "-" if self.best is None else f"{self.best:.4g}"
        status = (
            f"[green]{self.counts[TrialState.COMPLETE]} complete[/] "
            f"[yellow]{self.counts[TrialState.PRUNED]} pruned[/] "
            f"[red]{self.counts[TrialState.FAILED]} failed[/]  best {self.metric} {best}"
        )
        self.progress.update(self.task, completed=done, status=status)


@contextlib.contextmanager
def progress_shown(plan: SearchPlan, console: Console | None = None, *, joined: bool = False
                   ) -> Iterator[ProgressBar]:
    """The progress bar of ``plan``'s search on ``console`` (standard error by default; a live
    widget in a notebook), drawn once the search has opened its stores and said what it resumes;
    ``joined``: a worker's, counting the trials it runs."""
    console = console or Console(stderr=True)
    whole = Column(no_wrap=True)  # never cut: the line's room is taken from the bar, then the status's end
    counted = TextColumn("{task.completed:.0f} here", table_column=whole) if joined else MofNCompleteColumn(
        table_column=whole)
    others = [TextColumn("[bold]{task.description}", table_column=whole), counted, _Status(),
              TimeElapsedColumn(table_column=whole)]
    bar = _FittedBar(console, others)
    progress = Progress(*others[:1], bar, *others[1:], console=console, transient=False)
    shown = ProgressBar(progress, plan.n_trials, plan.space.metric, plan.space.direction, plan.study_name,
                        joined=joined, runnable=plan.runnable_trials)
    try:
        yield shown
    except BaseException:
        if not shown.ended_in_this_run:  # stopped before any trial ended: its one line, no empty bar above it
            progress.live.transient = True
        raise
    finally:
        if progress.live.is_started:  # a search refused before it began leaves its one line alone
            progress.stop()


class _Status(ProgressColumn):
    """The trials' counts and the best value: on a line too narrow for it, cut at its end."""

    def render(self, task: Task) -> Text:
        status = Text.from_markup(task.fields["status"])
        status.no_wrap, status.overflow = True, "ellipsis"
        return status


class _FittedBar(BarColumn):
    """A bar of at most ``BAR_WIDTH`` columns that takes only the room the line's other columns
    leave: an 80-column terminal cut the counts (``122/2…``) and the elapsed time to fit Rich's
    fixed bar of 40."""

    def __init__(self, console: Console, others: list[ProgressColumn]) -> None:
        super().__init__(bar_width=BAR_WIDTH, table_column=Column(no_wrap=True))
        self.console = console
        self.others = others

    def render(self, task: Task) -> RichBar:
        used = sum(self.console.measure(column(task)).maximum + 1 for column in self.others)  # one space each
        self.bar_width = max(1, min(BAR_WIDTH, self.console.width - used))
        return super().render(task)


BAR_WIDTH = 40
"""Rich's own width for a progress bar, where the line has room for it."""


class LeaderboardRow(NamedTuple):
    rank: int
    number: int
    stage: int
    value: float
    metrics: dict[str, float]
    params: dict[str, object]


def leaderboard(result: SearchResult, top: int = 10) -> list[LeaderboardRow]:
    """The ``top`` completed trials, best first."""
    complete = [t for t in ranking(result.trials, result.space.sign) if t.state is TrialState.COMPLETE][:top]
    return [LeaderboardRow(i + 1, t.number, t.stage, t.value, t.metrics, t.params)  # type: ignore[arg-type]
            for i, t in enumerate(complete)]


UNWRAPPED_WIDTH = 1000
"""The width of what goes to a file or a pipe (a log, ``| tee``): no line wrapped, no column of
the leaderboard cut to fit the 80 columns Rich assumes there."""


def why_none_completed(trials: list[TrialRecord]) -> str:
    """How the trials of a search that completed none ended, the commonest first (each trial's
    own reason is its MLflow run's ``hpo.reason``); where every one diverged, what that means."""
    ended = Counter("diverged" if t.reason == "diverged" else f"pruned by {t.reason}" if t.state is TrialState.PRUNED
                    else f"failed: {t.reason}" for t in trials)
    said = "; ".join(f"{count} {how}" for how, count in ended.most_common(3))
    if len(ended) > 3:
        said += f"; {sum(ended.values()) - sum(count for _, count in ended.most_common(3))} otherwise"
    if set(ended) == {"diverged"}:
        said += (". A loss that turns NaN or explodes says the learning rate is too high: lower the top of its "
                 "range")
    return f"{said}. Each trial's reason is its MLflow run's tag hpo.reason." if trials else "the budget ran none."


def print_summary(result: SearchResult, console: Console) -> None:
    if not console.is_terminal:
        console = Console(file=console.file, width=UNWRAPPED_WIDTH)
    rows = leaderboard(result)
    console.print(f"\n[bold]{result.study_name}[/]: {trials_text(len(result.trials))} ({by_state(result.trials)})")
    if not rows:
        console.print(f"[red]No trial completed[/]: {escape(why_none_completed(result.trials))}")
    else:
        param_names = sorted({name for row in rows for name in row.params})
        extra = sorted({m for row in rows for m in row.metrics if m != result.metric and m.startswith("val_")})
        staged = any(t.stage for t in result.trials)  # coarse-to-fine's stages; other strategies have one
        table = Table(title=f"Leaderboard ({result.space.direction} {result.metric})")
        for column in ["#", "trial", *(["stage"] if staged else []), result.metric, *extra, *param_names]:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(
                str(row.rank), str(row.number), *([str(row.stage)] if staged else []), shown(row.value),
                *(shown(row.metrics.get(m, "")) for m in extra),
                *(shown(row.params.get(p, "-")) for p in param_names),
            )
        console.print(table)
        best = result.best
        assert best is not None
        chosen = ", ".join(f"{k}={shown(v)}" for k, v in result.best_params.items())
        console.print(f"[bold]Best[/] trial {best.number}: {chosen}")
        if result.fixed:
            console.print("  fixed: " + ", ".join(f"{k}={shown(v)}" for k, v in result.fixed.items()))
        scores = ", ".join(f"{k} {shown(v)}" for k, v in best.metrics.items() if k.startswith("val_"))
        if scores:
            console.print(f"  validation: {scores}")
        if result.test_metrics:
            tested = ", ".join(f"{k} {shown(v)}" for k, v in result.test_metrics.items())
            console.print(f"  [bold]test[/] (evaluated once): {tested}")
    if result.stopped:
        console.print(f"[yellow]Stopped[/] by its {result.stopped}", soft_wrap=True, highlight=False)
    if not result.tracked:
        console.print("[yellow]MLflow could not be reached[/] to write all of this search: the next run of the "
                      "same command writes what is missing from the study.")
    if result.report is not None:
        console.print(f"Report: {result.report}", soft_wrap=True)
    console.print(mlflow_pointer(result), soft_wrap=True, highlight=False)


def print_studies(found: list[StudySummary], url: str, console: Console) -> None:
    """The table of ``hpo studies``: each search's study, how far its budget is run and its best."""
    if not console.is_terminal:
        console = Console(file=console.file, width=UNWRAPPED_WIDTH)
    console.print(f"Studies in {url}", soft_wrap=True, highlight=False)
    table = Table()
    for column, justify in (("study", "left"), ("space", "left"), ("strategy", "left"), ("trials", "right"),
                            ("ended", "left"), ("best", "right"), ("last trial", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for study in found:
        running = sum(t.state is TrialState.RUNNING for t in study.counted)
        ended = by_state(study.counted)
        space = study.plan["space"]
        best = "-" if study.best is None else f"{space['metric']} {shown(study.best)}"
        last = "-" if study.last is None else study.last.strftime("%Y-%m-%d %H:%M")
        table.add_row(study.name, space["name"], study.plan["strategy_name"],
                      f"{len(study.counted) - running}/{study.plan['n_trials']}",
                      ended + (f", {running} running" if running else ""), best, last)
    console.print(table)
    console.print("`hpo report STUDY` writes a study's report; the search's command run again resumes it",
                  highlight=False, soft_wrap=True)


def runs_url(base: str, result: SearchResult) -> str:
    """The search's saved view in MLflow (its trials best first, the parameter columns, the
    comparison charts); without one, the experiment's runs table filtered to its trials, best first."""
    if result.view_key:
        query = urlencode({"viewStateShareKey": result.view_key, "workflowType": "machine_learning"},
                          quote_via=quote)
        return f"{base.rstrip('/')}/#/experiments/{result.experiment_id}/runs?{query}"
    query = urlencode({
        "workflowType": "machine_learning",
        "searchFilter": f"tags.`hpo.study_run` = '{result.parent_run_id}'",
        "orderByKey": f"metrics.`ranking_{result.metric}`",
        "orderByAsc": str(result.space.direction == "minimize").lower(),
    }, quote_via=quote)
    return f"{base.rstrip('/')}/#/experiments/{result.experiment_id}/runs?{query}"


def serves_ui(makefile: Path) -> bool:
    """Whether ``makefile`` is one whose ``make ui`` serves ``.hpo/mlflow.db`` (hpo's own): a
    search run from the user's own folder is told the ``mlflow ui`` command instead."""
    try:
        text = makefile.read_text(errors="replace")
    except OSError:
        return False
    return "\nui:" in text and ".hpo/mlflow.db" in text


def mlflow_pointer(result: SearchResult, cwd: Path | None = None) -> str:
    """Where to see the search in MLflow: a link that lands on its trials, ranked. For the SQLite
    store that ``make ui`` serves, where hpo's Makefile is at hand, at ``make ui``'s address
    (``HPO_UI_URL``, which ``make search`` sets from ``HOST``/``PORT``); for a tracking server,
    at the server; otherwise, how to serve it."""
    uri = result.tracking_uri
    where = f"MLflow: experiment {result.experiment!r} (id {result.experiment_id}), search run {result.parent_run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{where}\n  {runs_url(uri, result)}"
    folder = cwd or Path.cwd()
    served = (folder / ".hpo" / "mlflow.db").resolve()
    if (uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).resolve() == served
            and serves_ui(folder / "Makefile")):
        base = os.environ.get("HPO_UI_URL", "http://127.0.0.1:5000")
        return f"{where}\n  `make ui` serves it: {runs_url(base, result)}"
    return (f"{where} in {uri}\n  serve it with `mlflow ui --backend-store-uri {uri}`, then open "
            f"{runs_url('http://127.0.0.1:5000', result)}")
