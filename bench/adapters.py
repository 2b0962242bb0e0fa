"""What a trial's bookkeeping costs each way hpo could write it, the public ways included.

One population of K trials reporting ``STEPS`` values each, on fresh SQLite files:

- Optuna: hpo's ``OneTransaction`` (its tables, a transaction per population step), hpo's
  ``PublicCalls`` (``RDBStorage``'s public API, a commit per write), and Optuna's
  ``JournalStorage`` on a file (``study.ask`` / ``trial.report`` / ``study.tell``).
- MLflow: hpo's joined transaction, the client's calls run by run (what a tracking server
  gets), and the client's ``log_batch(..., synchronous=False)`` (MLflow's async logging).

Then one look for trials whose process has ended (``TrialStore.stale``), with ``--running``
trials running that have reported ``STEPS`` values each: the claim attribute of each read in one
query on Optuna's tables, through ``RDBStorage``'s public API, and through the study's own
``get_trials``.

    python bench/adapters.py            # K=32, 10 steps
    python bench/adapters.py --k 8 --running 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from hpo.store._optuna import End, OneTransaction, PublicCalls
from hpo.tracking._runs import RunRef, RunWrite, _in_one_transaction, write_one_by_one

STEPS = 10
DISTRIBUTION = {"lr": FloatDistribution(1e-5, 1.0, log=True)}


def optuna_hpo(folder: Path, k: int, way: type) -> None:
    writes = way(RDBStorage(f"sqlite:///{folder / 'optuna.db'}"))
    study_id = writes.storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "bench")
    made = writes.add_trials(study_id, [optuna.trial.create_trial(
        state=TrialState.RUNNING, params={"lr": 0.01}, distributions=DISTRIBUTION, user_attrs={"hpo.claim": {}})
        for _ in range(k)])
    for step in range(STEPS):
        writes.add_reports([(trial_id, step, 0.5) for trial_id, _ in made])
        writes.beat([trial_id for trial_id, _ in made])
    writes.end([], [End(trial_id, TrialState.COMPLETE, 0.5, {"hpo.result": {"state": "complete"}})
                    for trial_id, _ in made])


def optuna_journal(folder: Path, k: int) -> None:
    storage = JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    study = optuna.create_study(storage=storage)
    trials = [study.ask(DISTRIBUTION) for _ in range(k)]
    for trial in trials:
        trial.set_user_attr("hpo.claim", {})
    for step in range(STEPS):
        for trial in trials:
            trial.report(0.5, step)
    for trial in trials:
        trial.set_user_attr("hpo.result", {"state": "complete"})
        study.tell(trial, 0.5)


def mlflow_runs(folder: Path, k: int, write: Callable) -> None:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment_id = client.create_experiment("bench")
    runs = [RunRef() for _ in range(k)]
    write(client, [RunWrite(run, experiment_id, name=f"trial-{n}", tags=[RunTag("hpo.state", "running")],
                            params=[Param("lr", "0.01"), Param("seed", str(n))]) for n, run in enumerate(runs)])
    for step in range(STEPS):
        write(client, [RunWrite(run, metrics=[Metric("val_loss", 0.5, step, step)]) for run in runs])
    write(client, [RunWrite(run, metrics=[Metric("final_val_loss", 0.5, 0, 0)], tags=[RunTag("hpo.state", "complete")],
                            status="FINISHED", end_time=1) for run in runs])


def mlflow_async(folder: Path, k: int) -> None:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment_id = client.create_experiment("bench")
    run_ids = [client.create_run(experiment_id, run_name=f"trial-{n}", tags={"hpo.state": "running"}).info.run_id
               for n in range(k)]
    pending = [client.log_batch(run_id, params=[Param("lr", "0.01"), Param("seed", str(n))], synchronous=False)
               for n, run_id in enumerate(run_ids)]
    for step in range(STEPS):
        pending += [client.log_batch(run_id, metrics=[Metric("val_loss", 0.5, step, step)], synchronous=False)
                    for run_id in run_ids]
    pending += [client.log_batch(run_id, metrics=[Metric("final_val_loss", 0.5, 0, 0)],
                                 tags=[RunTag("hpo.state", "complete")], synchronous=False) for run_id in run_ids]
    for operation in pending:
        operation.wait()
    for run_id in run_ids:
        client.set_terminated(run_id, "FINISHED")


def running_claims(folder: Path, n: int) -> dict[str, Callable[[], object]]:
    """A study with ``n`` running trials that reported ``STEPS`` values each, and each way of
    reading their claims."""
    storage = RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    writes = OneTransaction(storage)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "running")
    made = writes.add_trials(study_id, [optuna.trial.create_trial(
        state=TrialState.RUNNING, params={"lr": 0.01}, distributions=DISTRIBUTION,
        user_attrs={"hpo.claim": {"process": "boot/[1]/1/1"}}) for _ in range(n)])
    for step in range(STEPS):
        writes.add_reports([(trial_id, step, 0.5) for trial_id, _ in made])
    study = optuna.load_study(study_name="running", storage=storage)
    return {
        "hpo: one query on its tables": lambda: writes.running_attr(study_id, "hpo.claim"),
        "hpo: RDBStorage's public API": lambda: PublicCalls(storage).running_attr(study_id, "hpo.claim"),
        "Optuna: study.get_trials(states=RUNNING)": lambda: study.get_trials(deepcopy=False,
                                                                              states=(TrialState.RUNNING,)),
    }


def timed(work: Callable[[Path], None], template: Path) -> float:
    """Seconds ``work`` takes in a fresh folder holding copies of the empty stores of ``template``
    (made before the clock starts: MLflow's migrations take seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        for store in template.iterdir():
            shutil.copy(store, folder)
        started = time.perf_counter()
        work(Path(folder))
        return time.perf_counter() - started


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def empty_stores(folder: Path) -> Path:
    RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--running", type=int, default=1024, help="running trials for the look at their claims")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    k = args.k
    rows = {
        ("Optuna", "hpo: its tables, one transaction a step"): lambda f: optuna_hpo(f, k, OneTransaction),
        ("Optuna", "hpo: RDBStorage's public API"): lambda f: optuna_hpo(f, k, PublicCalls),
        ("Optuna", "JournalStorage (file), ask/report/tell"): lambda f: optuna_journal(f, k),
        ("MLflow", "hpo: its tables, one transaction a step"): lambda f: mlflow_runs(f, k, _in_one_transaction),
        ("MLflow", "client calls, run by run"): lambda f: mlflow_runs(f, k, write_one_by_one),
        ("MLflow", "client log_batch(synchronous=False)"): lambda f: mlflow_async(f, k),
    }
    table = Table(title=f"bookkeeping of a population of {k} trials, {STEPS} reports each, on SQLite / a file")
    for column in ("library", "way", "ms a trial", "vs hpo's tables"):
        table.add_column(column, justify="left" if column in ("library", "way") else "right")
    base: dict[str, float] = {}
    template = empty_stores(Path(tempfile.mkdtemp()))
    for (library, way), work in rows.items():
        timed(work, template)  # warm: imports, connections' first use
        seconds = min(timed(work, template) for _ in range(3))
        base.setdefault(library, seconds)
        table.add_row(library, way, f"{1000 * seconds / k:.1f}", f"{seconds / base[library]:.1f}x")
    console = Console(width=160)
    console.print(table)
    looks = Table(title=f"one look at the claims of {args.running} running trials, {STEPS} reports each, on SQLite")
    for column in ("way", "ms a look", "vs one query"):
        looks.add_column(column, justify="left" if column == "way" else "right")
    ways = running_claims(Path(tempfile.mkdtemp()), args.running)
    first = None
    for way, look in ways.items():
        look()  # warm
        seconds = min(_seconds(look) for _ in range(3))
        first = first or seconds
        looks.add_row(way, f"{1000 * seconds:.1f}", f"{seconds / first:.1f}x")
    console.print(looks)
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; optuna {optuna.__version__}, mlflow "
                  f"{mlflow.__version__}, python {platform.python_version()}")


if __name__ == "__main__":
    main()
