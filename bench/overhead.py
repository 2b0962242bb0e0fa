"""Per-trial overhead of hpo against bare Optuna, on a null objective that reports 10 steps.

Both use a fresh SQLite Optuna storage in the same folder; hpo also writes every trial to a
SQLite MLflow store (a child run, 10-step curves, params, tags, final metrics). Run with
``make bench``; the table is what goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
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


def time_hpo(folder: Path, n_trials: int) -> float:
    prepared = hpo.prepare(hpo_null, SPACE, strategy="random", n_trials=n_trials, pruner="median",
                           home=folder, evaluate_test=False)
    started = time.perf_counter()
    prepared.run()
    return time.perf_counter() - started


def time_optuna(folder: Path, n_trials: int) -> float:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{folder / 'bare.db'}", pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    started = time.perf_counter()
    study.optimize(optuna_null, n_trials=n_trials)
    return time.perf_counter() - started


def warm_up(folder: Path) -> None:
    """Create both databases (schema migrations) outside the timed part."""
    time_hpo(folder / "warm", 1)
    time_optuna(folder / "warm", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"bare Optuna (SQLite)": [], "hpo, Optuna driver + MLflow (SQLite)": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "warm").mkdir()
        warm_up(root)
        for repeat in range(args.repeats):
            for name, timer in zip(rows, (time_optuna, time_hpo), strict=False):
                folder = root / f"{repeat}-{len(rows[name])}-{timer.__name__}"
                folder.mkdir()
                rows[name].append(timer(folder, args.trials) / args.trials * 1000)
    base = statistics.median(rows["bare Optuna (SQLite)"])
    table = Table(title=f"Per-trial overhead, null objective, {STEPS} reports/trial, {args.trials} trials x {args.repeats}")
    for column in ("runner", "ms/trial (median)", "min", "max", "ratio to bare Optuna"):
        table.add_column(column, justify="right")
    for name, values in rows.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:.1f}", f"{min(values):.1f}", f"{max(values):.1f}", f"{median / base:.2f}x")
    console = Console(width=160)
    console.print(table)
    console.print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}, "
                  f"python {platform.python_version()}, optuna {optuna.__version__}")


if __name__ == "__main__":
    main()
