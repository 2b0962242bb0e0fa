"""Per-trial overhead of hpo against bare Optuna, on a null objective that reports 10 steps.

Every runner uses a fresh SQLite Optuna storage in the same folder, the same median pruner
and random sampling: bare Optuna (``study.optimize``), bare Optuna with optuna-integration's
``MLflowCallback`` writing each trial to a SQLite MLflow store, and hpo with its full MLflow
layout (child run, 10-step curves, params, tags, final metrics, status): one trial at a time,
with a pool of worker processes, and in populations of K trials claimed, trained and written
together. With several workers, bare Optuna runs one process per worker on the shared storage
and hpo its pool; both times include starting those processes (hpo's fork server too). ``--scale`` repeats hpo's
population row at more trials, to show that its per-trial cost stays flat. Run with ``make bench``.
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
import torch
from rich.console import Console
from rich.table import Table

import hpo
from hpo import SearchSpace
from hpo.population import Recipe

SPACE = SearchSpace.model_validate(
    {"name": "null", "metric": "val_loss", "direction": "minimize",
     "params": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
                "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}},
     "fixed": {"epochs": 10, "batch_size": 1, "optimizer": "sgd"}}
)
STEPS = 10


class NullObjective:
    """Reports ten steps and returns; as a population, ten epochs of one step of a one-weight
    model on one example, so that what is timed is hpo's bookkeeping."""

    def __call__(self, params, trial):
        for step in range(STEPS):
            trial.report(step, val_loss=params["lr"] / (step + 1))
        return {"val_loss": params["lr"] / STEPS}

    def population(self, params, trial):
        one = (torch.zeros(1, 1), torch.zeros(1, 1))
        return Recipe(build=lambda p: torch.nn.Linear(1, 1, bias=False), train=one, validation=one,
                      loss=torch.nn.functional.mse_loss, accuracy=False)


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
    folder.mkdir(parents=True, exist_ok=True)
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


def fresh_forkserver() -> None:
    """Stop the fork server an earlier timing left running (private, and in this benchmark
    only), so that each pool search pays for starting its own, as an ``hpo search`` does."""
    import multiprocessing.forkserver

    stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


def time_hpo(folder: Path, n_trials: int, workers: int, population: int = 1) -> float:
    fresh_forkserver()
    prepared = hpo.prepare(NullObjective(), SPACE, strategy="random", n_trials=n_trials, pruner="median",
                           home=folder, evaluate_test=False, population=population,
                           driver=hpo.OptunaOptions(workers=workers, gpus="none"))
    from mlflow import MlflowClient

    from hpo.store import default_storage_url
    from hpo.tracking import default_tracking_uri

    # Both databases' tables are created untimed, as for bare Optuna.
    optuna.storages.RDBStorage(default_storage_url(folder))
    MlflowClient(default_tracking_uri(folder)).search_experiments()
    started = time.perf_counter()
    prepared.run()
    return time.perf_counter() - started


def time_mlflow_floor(folder: Path, n_trials: int) -> float:
    """The least a trial's child run costs in MLflow's SQLite store, without Optuna or hpo: the
    three client calls it takes (create the run with its tags; one batch of 10-step curves of
    two metrics, parameters and end tags; set it terminated)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("floor")
    started = time.perf_counter()
    for number in range(n_trials):
        run = client.create_run(experiment, tags={"hpo.trial_number": str(number), "hpo.stage": "0"},
                                run_name=f"trial-{number:04d}")
        client.log_batch(run.info.run_id,
                         metrics=[Metric(name, 0.5, 0, step) for step in range(STEPS) for name in ("loss", "acc")],
                         params=[Param("lr", "0.1"), Param("weight_decay", "0.01")],
                         tags=[RunTag("hpo.state", "complete"),
                               RunTag("mlflow.runName", f"trial-{number:04d} loss=0.5")])
        client.set_terminated(run.info.run_id, "FINISHED")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--scale", type=int, nargs="*", default=[1000], help="more trials for hpo's population row")
    args = parser.parse_args()
    runners = {
        "bare Optuna": lambda folder, workers: time_optuna(folder, args.trials, workers, False),
        "bare Optuna + MLflowCallback": lambda folder, workers: time_optuna(folder, args.trials, workers, True),
        "hpo (Optuna driver, full MLflow)": lambda folder, workers: time_hpo(folder, args.trials, workers),
    }
    results: dict[tuple[str, int, int, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def timed(key: tuple[str, int, int, int], run) -> None:
            folder = root / f"{len(results)}-{sum(len(v) for v in results.values())}"
            folder.mkdir()
            results.setdefault(key, []).append(run(folder) / key[3] * 1000)

        for _ in range(args.repeats):
            for workers in args.workers:
                for name, timer in runners.items():
                    timed((name, workers, 1, args.trials), lambda folder, t=timer, w=workers: t(folder, w))
            timed(("hpo, populations", 1, args.population, args.trials),
                  lambda folder: time_hpo(folder, args.trials, 1, args.population))
            timed(("MLflow alone: 3 calls per run", 1, 1, args.trials),
                  lambda folder: time_mlflow_floor(folder, args.trials))
        for n in args.scale:
            timed(("hpo, populations", 1, args.population, n),
                  lambda folder, n=n: time_hpo(folder, n, 1, args.population))
    table = Table(title=f"Per-trial overhead: null objective, {STEPS} reports/trial, median of {args.repeats}")
    for column in ("runner", "workers", "K", "trials", "ms/trial", "min", "max", "ratio to bare Optuna",
                   "ratio to + MLflowCallback"):
        table.add_column(column, justify="right")
    for (name, workers, k, n), values in results.items():
        base = statistics.median(results[("bare Optuna", workers, 1, args.trials)])
        callback = statistics.median(results[("bare Optuna + MLflowCallback", workers, 1, args.trials)])
        median = statistics.median(values)
        table.add_row(name, str(workers), str(k), str(n), f"{median:.1f}", f"{min(values):.1f}", f"{max(values):.1f}",
                      f"{median / base:.2f}x", f"{median / callback:.2f}x")
    console = Console(width=180)
    console.print(table)
    console.print(f"machine: {platform.machine()}, {mp.cpu_count()} CPUs, python {platform.python_version()}, "
                  f"optuna {optuna.__version__}")


if __name__ == "__main__":
    main()
