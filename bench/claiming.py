"""What claiming TPE (or GP) trials costs, `hpo`'s trial store against bare Optuna asking the
same stored study, as the history and the number claimed at once (a population's rows) grow.

Both sample with Optuna's TPE (constant liar, a sampler seeded per trial; ``--strategy gp``:
Optuna's GPSampler) over a learning rate, a weight decay and a dropout, on an SQLite study
holding ``done`` complete trials (the same ones for both). Bare Optuna asks the stored study
``k`` times (``study.ask()`` and a suggest per parameter, the way `hpo` sampled until it read
the study once per claim); `hpo` claims ``k`` trials at once, as a population does. A claim of
one is the median of 20 (of 3 for GP). Run with ``make bench``;
``python bench/claiming.py --strategy gp --done 50 200 --claimed 1 8 32`` for GP.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

import hpo
from hpo.store import TrialStore
from hpo.store._store import SAMPLERS, distributions, sampler_seed, suggest

SPACE = {"name": "lr_wd_dropout", "metric": "val_loss", "direction": "minimize", "params": {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}}


def history(space: hpo.SearchSpace, done: int) -> list[optuna.trial.FrozenTrial]:
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(done):
        params = {"lr": float(10 ** rng.uniform(-4, 0)), "weight_decay": float(10 ** rng.uniform(-6, -2)),
                  "dropout": float(rng.uniform(0, 0.5))}
        trials.append(optuna.trial.create_trial(params=params, distributions=distributions(space, params),
                                                value=abs(math.log10(params["lr"]) + 2.5)))
    return trials


def hpo_claims(folder: Path, done: int, k: int, strategy: str, repeats: int) -> float:
    """Seconds for `hpo`'s store to claim ``k`` trials at once (one: the median of ``repeats``)."""
    url = f"sqlite:///{folder}/hpo-{strategy}-{done}-{k}.db"
    prepared = hpo.prepare(lambda params, trial: 1.0, SPACE, strategy=strategy, n_trials=done + 10_000,
                           study_name="claiming", experiment="claiming", evaluate_test=False, storage=url,
                           tracking_uri=f"sqlite:///{folder}/mlflow.db")
    store = TrialStore(url, "claiming")
    store.open(prepared.plan, {})
    store.study.add_trials(history(prepared.plan.space, done))
    times = []
    for _ in range(repeats if k == 1 else 1):
        started = time.perf_counter()
        store.claim(prepared.plan, "bench:1", k)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bare_asks(folder: Path, done: int, k: int, strategy: str, repeats: int) -> float:
    """Seconds for bare Optuna to ask the stored study ``k`` times (one: the median of ``repeats``)."""
    space = hpo.SearchSpace.model_validate(SPACE)
    study = optuna.create_study(storage=f"sqlite:///{folder}/bare-{strategy}-{done}-{k}.db")
    study.add_trials(history(space, done))
    times = []
    for _ in range(repeats if k == 1 else 1):
        started = time.perf_counter()
        for _ in range(k):
            study.sampler = SAMPLERS[strategy].sampler(sampler_seed(0, len(study.trials)))
            suggest(study.ask(), space)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--done", type=int, nargs="+", default=[0, 1000])
    parser.add_argument("--claimed", type=int, nargs="+", default=[1, 16, 128, 1024])
    parser.add_argument("--bare-up-to", type=int, default=128,
                        help="claims larger than this are not asked of bare Optuna (minutes each)")
    parser.add_argument("--strategy", choices=list(SAMPLERS), default="tpe")
    args = parser.parse_args()
    repeats = 20 if args.strategy == "tpe" else 3
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    table = Table(title=f"Claiming {args.strategy.upper()} trials, seconds ({platform.machine()}, "
                        f"{mp.cpu_count()} CPUs, Python {platform.python_version()}, Optuna {optuna.__version__})")
    for column in ("trials done", "claimed at once", "hpo", "bare optuna", "bare / hpo"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as folder:
        for done in args.done:
            for k in args.claimed:
                ours = hpo_claims(Path(folder), done, k, args.strategy, repeats)
                bare = bare_asks(Path(folder), done, k, args.strategy, repeats) if k <= args.bare_up_to else None
                table.add_row(f"{done:,}", f"{k:,}", f"{ours:.3f}", "not run" if bare is None else f"{bare:.3f}",
                              "" if bare is None else f"{bare / ours:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
