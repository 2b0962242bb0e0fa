"""Per-trial overhead of hpo against bare Optuna, on a null objective that reports 10 steps.

Every runner uses a fresh SQLite Optuna storage in the same folder, the same median pruner
and random sampling: bare Optuna (``study.optimize``), bare Optuna with optuna-integration's
``MLflowCallback`` writing each trial to a SQLite MLflow store, and hpo with its full MLflow
layout (child run, 10-step curves, params, tags, final metrics, status). With several
workers, bare Optuna runs one process per worker on the shared storage and hpo its pool;
both times include starting those processes. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

import hpo
from hpo import SearchSpace

SPACE = SearchSpace.model_validate(
    {"name": "null", "metric": "loss", "direction": "minimize",
     "params": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
                "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}}
)
STEPS = 10


def hpo_null(params, trial):
    for step in range(STEPS):
        trial.report(step, loss=params["lr"] / (step + 1))
    return params["lr"] / STEPS


def optuna_null(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    for step in range(STEPS):
        trial.report(lr / (step + 1), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return lr / STEPS


def _optuna_worker(storage: str, n_trials: int, tracking_uri: str | None, seed: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="bare", storage=storage,
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
                              sampler=optuna.samplers.RandomSampler(seed=seed))
    callbacks = []
    if tracking_uri is not None:
        import warnings

        from optuna_integration.mlflow import MLflowCallback

        warnings.filterwarnings("ignore", "MLflowCallback has been deprecated", FutureWarning)
        callbacks.append(MLflowCallback(tracking_uri=tracking_uri, metric_name="loss"))
    study.optimize(optuna_null, n_trials=n_trials, callbacks=callbacks)


def time_optuna(folder: Path, n_trials: int, workers: int, with_mlflow: bool) -> float:
    storage = f"sqlite:///{folder / 'bare.db'}"
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}" if with_mlflow else None
    optuna.create_study(study_name="bare", storage=storage)
    if with_mlflow:  # create the MLflow store's tables outside the timed part, as for hpo
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).search_experiments()
    started = time.perf_counter()
    if workers == 1:
        _optuna_worker(storage, n_trials, tracking_uri, 0)
    else:
        context = mp.get_context("spawn")
        processes = [context.Process(target=_optuna_worker, args=(storage, n_trials // workers, tracking_uri, i))
                     for i in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    return time.perf_counter() - started


def time_hpo(folder: Path, n_trials: int, workers: int) -> float:
    prepared = hpo.prepare(hpo_null, SPACE, strategy="random", n_trials=n_trials, pruner="median",
                           home=folder, evaluate_test=False, driver=hpo.OptunaOptions(workers=workers, gpus="none"))
    from mlflow import MlflowClient

    from hpo.store import default_storage_url
    from hpo.tracking import default_tracking_uri

    # Both databases' tables are created untimed, as for bare Optuna.
    optuna.storages.RDBStorage(default_storage_url(folder))
    MlflowClient(default_tracking_uri(folder)).search_experiments()
    started = time.perf_counter()
    prepared.run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    runners = {
        "bare Optuna": lambda folder, workers: time_optuna(folder, args.trials, workers, False),
        "bare Optuna + MLflowCallback": lambda folder, workers: time_optuna(folder, args.trials, workers, True),
        "hpo (Optuna driver, full MLflow)": lambda folder, workers: time_hpo(folder, args.trials, workers),
    }
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for repeat in range(args.repeats):
            for workers in args.workers:
                for name, timer in runners.items():
                    folder = root / f"{repeat}-{workers}-{len(results)}-{hash(name) & 0xffff}"
                    folder.mkdir()
                    results.setdefault((name, workers), []).append(timer(folder, workers) / args.trials * 1000)
    table = Table(title=f"Per-trial overhead: null objective, {STEPS} reports/trial, {args.trials} trials, "
                        f"median of {args.repeats}")
    for column in ("runner", "workers", "ms/trial", "min", "max", "ratio to bare Optuna"):
        table.add_column(column, justify="right")
    for (name, workers), values in results.items():
        base = statistics.median(results[("bare Optuna", workers)])
        median = statistics.median(values)
        table.add_row(name, str(workers), f"{median:.1f}", f"{min(values):.1f}", f"{max(values):.1f}",
                      f"{median / base:.2f}x")
    console = Console(width=160)
    console.print(table)
    console.print(f"machine: {platform.machine()}, {mp.cpu_count()} CPUs, python {platform.python_version()}, "
                  f"optuna {optuna.__version__}")


if __name__ == "__main__":
    main()
