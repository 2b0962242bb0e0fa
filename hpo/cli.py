"""The ``hpo`` command: ``hpo search SPACE [options]``."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo._errors import HpoError
from hpo._trial import TrialRecord, TrialState
from hpo.drivers import PRUNERS, SearchListener
from hpo.strategies import STRATEGIES

console = Console(stderr=True)


class ProgressBar(SearchListener):
    """Trials done, pruned and failed, and the best value so far, while the search runs."""

    def __init__(self, progress: Progress, n_trials: int, metric: str, direction: str) -> None:
        self.progress = progress
        self.metric = metric
        self.sign = 1 if direction == "minimize" else -1
        self.counts = {state: 0 for state in TrialState}
        self.best: float | None = None
        self.task = progress.add_task("search", total=n_trials, status="")

    def resumed(self, trials: list[TrialRecord]) -> None:
        for trial in trials:
            self._count(trial)
        self._draw()

    def trial_finished(self, trial: TrialRecord) -> None:
        self._count(trial)
        self._draw()

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Hyperparameter search for PyTorch: Optuna or Ray Tune, every trial in MLflow."""


@cli.command()
@click.argument("space")
@click.option("--objective", help="Built-in name, module:function or file.py:function [default: the space's].")
@click.option("--strategy", default="coarse-to-fine", show_default=True, help=f"One of: {', '.join(STRATEGIES)}.")
@click.option("--driver", default="optuna", show_default=True, help="Engine: optuna or ray.")
@click.option("--trials", "n_trials", default=40, show_default=True, type=int, help="Trials in the study in all.")
@click.option("--pruner", default="none", show_default=True, help=f"One of: {', '.join(PRUNERS)}.")
@click.option("--storage", help="Optuna storage URL [default: sqlite:///.hpo/optuna.db].")
@click.option("--tracking-uri", help="MLflow tracking URI [default: sqlite:///.hpo/mlflow.db].")
@click.option("--experiment", help="MLflow experiment [default: the space's name].")
@click.option("--study", "study_name", help="Study name [default: SPACE-OBJECTIVE-STRATEGY-seedN].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--divergence-guard/--no-divergence-guard", default=True, show_default=True,
              help="End a trial at once when its loss turns NaN or explodes.")
@click.option("--test/--no-test", "evaluate_test", default=True, show_default=True,
              help="Score the best configuration once on the test set.")
@click.option("--workers", default="auto", show_default=True,
              help="Optuna driver: worker processes (N or auto: one per GPU slot, or half the cores).")
@click.option("--gpus", help="Optuna driver: all, none, or ids like 0,1 [default: all there are].")
@click.option("--trials-per-gpu", default=1, show_default=True, type=int,
              help="Optuna driver: worker slots per GPU, for small models.")
@click.option("--ray-address", help="Ray driver: an existing cluster [default: a local Ray instance].")
@click.option("--cpus-per-trial", default=1.0, show_default=True, type=float, help="Ray driver: CPUs per trial.")
@click.option("--gpus-per-trial", default=0.0, show_default=True, type=float,
              help="Ray driver: GPUs per trial; 0.25 packs four trials on a GPU.")
def search(space: str, **options: object) -> None:
    """Search SPACE (a name in search_spaces/ or a YAML path); rerunning resumes the study."""
    from hpo._report import print_summary
    from hpo._search import prepare

    prepared = prepare(space=space, **options)  # type: ignore[arg-type]  # refuse bad input first
    plan = prepared.plan
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        result = prepared.run(ProgressBar(progress, plan.n_trials, plan.space.metric, plan.space.direction))
    print_summary(result, Console())


@cli.command()
@click.option("--study", "study_name", required=True, help="The study of a running search (see its summary).")
@click.option("--storage", required=True, help="The search's Optuna storage URL (postgresql://... for many machines).")
@click.option("--workers", default="auto", show_default=True, help="Worker processes on this machine (N or auto).")
@click.option("--gpus", help="all, none, or ids like 0,1 [default: all there are].")
@click.option("--trials-per-gpu", default=1, show_default=True, type=int, help="Worker slots per GPU.")
def worker(study_name: str, storage: str, **options: object) -> None:
    """Join a running search from this machine: draw trials from the same budget."""
    from hpo._search import join

    ran = join(study_name, storage, **options)  # type: ignore[arg-type]
    console.print(f"hpo worker: ran {ran} trials of {study_name!r}; the budget is claimed")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except HpoError as error:
        console.print(f"[red]hpo: error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.ClickException as error:
        console.print(f"[red]hpo: error:[/] {error.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        console.print("hpo: interrupted; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
