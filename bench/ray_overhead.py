"""The Ray driver against bare Ray Tune, on one local Ray instance (2 CPUs, 1 CPU a trial).

1. Per-trial overhead on a null objective that reports 10 steps, without a pruner and with the
   median rule (then every report waits for the driver's decision), beside bare Optuna with its
   ``MLflowCallback`` in one process (``bench/overhead.py``'s reference) in the same run.
2. 200 one-second trials: the wall time against its 100-second minimum on 2 CPUs.

hpo's Ray driver (its loop in this process, trials on Ray actors) also writes every trial to a
SQLite MLflow store; the null workload is also run with bare Tune and Ray's own
``MLflowLoggerCallback`` writing to one, as a Tune user would wire it by hand. Bare Tune runs
with its per-trial file loggers off.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import ray
from overhead import time_optuna
from ray import tune
from rich.console import Console
from rich.table import Table

import hpo
from hpo import SearchSpace

SPACE = SearchSpace.model_validate(
    {"name": "null", "metric": "loss", "direction": "minimize",
     "params": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}}}
)


def hpo_null(params, trial):
    for step in range(10):
        trial.report(step, loss=params["lr"] / (step + 1))
    return params["lr"] / 10


def hpo_sleep(params, trial):
    time.sleep(1.0)
    trial.report(0, loss=params["lr"])
    return params["lr"]


def bare_null(config):
    for step in range(10):
        tune.report({"loss": config["lr"] / (step + 1)})


def bare_sleep(config):
    time.sleep(1.0)
    tune.report({"loss": config["lr"]})


def time_hpo(objective, n_trials: int, folder: Path, pruner: str = "none") -> float:
    started = time.perf_counter()
    hpo.search(objective, SPACE, driver="ray", strategy="random", n_trials=n_trials, home=folder, pruner=pruner,
               study_name=f"bench-{objective.__name__}-{pruner}", evaluate_test=False)
    return time.perf_counter() - started


def time_bare(trainable, n_trials: int, folder: Path, with_mlflow: bool = False, median: bool = False) -> float:
    """Bare Tune; ``with_mlflow``: with Ray's own ``MLflowLoggerCallback`` writing each trial's
    run (params, every result's metrics, status) to a SQLite MLflow store, created untimed;
    ``median``: with Tune's ``MedianStoppingRule`` judging every result (as hpo's median rule
    does: after 5 trials, from the second step)."""
    callbacks = []
    if with_mlflow:
        from mlflow import MlflowClient
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = f"sqlite:///{folder / 'mlflow.db'}"
        folder.mkdir(parents=True, exist_ok=True)
        MlflowClient(uri).create_experiment("bare")
        callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name="bare"))
    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-5, 1.0)},
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=n_trials, reuse_actors=True,
                                    scheduler=tune.schedulers.MedianStoppingRule(
                                        time_attr="training_iteration", grace_period=2, min_samples_required=5)
                                    if median else None),
        run_config=tune.RunConfig(storage_path=str(folder), name=trainable.__name__, verbose=0, callbacks=callbacks),
    )
    tuner.fit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--null-trials", type=int, default=100)
    parser.add_argument("--sleep-trials", type=int, default=200)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The hand-wired Optuna reference first, before Ray's processes start (the faster of two:
        # the first imports MLflow and the callback).
        reference = min(time_optuna(root / f"optuna-{repeat}", args.null_trials, 1, with_mlflow=True)
                        for repeat in range(2))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        time_bare(bare_null, 2, root / "warm")  # actors, imports: outside the timed part
        time_hpo(hpo_null, 2, root / "warm")
        bare = time_bare(bare_null, args.null_trials, root / "bare")
        logged = time_bare(bare_null, args.null_trials, root / "bare-mlflow", with_mlflow=True)
        bare_median = time_bare(bare_null, args.null_trials, root / "bare-median", median=True)
        null = time_hpo(hpo_null, args.null_trials, root / "hpo")
        median = time_hpo(hpo_null, args.null_trials, root / "hpo-median", pruner="median")
        rows.append(("null objective, 10 reports", args.null_trials, bare, null, None))
        rows.append(("null, bare + MLflowLoggerCallback", args.null_trials, logged, null, None))
        rows.append(("null, hpo with the median pruner", args.null_trials, bare, median, None))
        rows.append(("null, both with a median rule (Tune's MedianStoppingRule)", args.null_trials, bare_median, median,
                     None))
        if args.sleep_trials:
            bare = time_bare(bare_sleep, args.sleep_trials, root / "bare")
            ours = time_hpo(hpo_sleep, args.sleep_trials, root / "hpo")
            rows.append(("one-second trials", args.sleep_trials, bare, ours, args.sleep_trials / 2))
    ray.shutdown()
    table = Table(title="Ray Tune: bare against hpo --driver ray (2 CPUs, 1 CPU a trial)")
    for column in ("workload", "trials", "bare Tune s", "hpo s", "hpo / bare", "ms/trial bare", "ms/trial hpo",
                   "bare / minimum", "hpo / minimum"):
        table.add_column(column, justify="right")
    for name, n, bare, ours, minimum in rows:
        table.add_row(name, str(n), f"{bare:.1f}", f"{ours:.1f}", f"{ours / bare:.2f}x", f"{bare / n * 1000:.0f}",
                      f"{ours / n * 1000:.0f}", f"{bare / minimum:.2f}x" if minimum else "-",
                      f"{ours / minimum:.2f}x" if minimum else "-")
    Console(width=160).print(table)
    per_trial = reference / args.null_trials * 1000
    Console(width=160).print(
        f"bare Optuna + MLflowCallback (one process, median pruner, same null objective, before Ray started): "
        f"{per_trial:.0f} ms a trial; "
        f"hpo --driver ray {null / reference:.2f}x that without a pruner, "
        f"{median / reference:.2f}x with the median rule")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    Console(width=160).print(f"machine: {machine}, ray {ray.__version__}")


if __name__ == "__main__":
    main()
