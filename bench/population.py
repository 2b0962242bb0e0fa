"""Trials per hour with population training, against one trial at a time, on the spaces users
search, on both drivers.

Two random searches of the MNIST-1D MLP (``--objective``), every trial ``--epochs`` epochs (no
early stopping):

1. **full** (``search_spaces/full.yaml``: optimizer, learning rate, momentum, weight decay,
   dropout, batch size): the plain loop a user writes without hpo (the objective called by hand,
   one trial after another, no study, no MLflow), hpo one trial at a time, and populations of K
   on the Optuna driver and on the Ray driver (one actor of K rows);
2. **lr_wd** (``search_spaces/lr_wd.yaml``, 512 units): a population of K without pruning and
   with ``--pruner successive-halving`` (``--pruned-trials``): the epochs pruning saved, and
   whether the trials per hour grew by as much.

Occupancy is the mean of active rows / K over the population's epochs (the Optuna driver, which
trains in this process): while the budget still had trials to refill rows with, and over the
whole search (its end, once the budget is out, drains). hpo's times include its study, MLflow writes and the report.

    python bench/population.py --ks 32
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import hpo
from hpo.population import _train
from hpo.spaces import load_space
from objectives import OBJECTIVES


def space(name: str, objective: str, epochs: int) -> hpo.SearchSpace:
    """A space of ``search_spaces/``, every trial ``epochs`` epochs long."""
    loaded = load_space(name)
    fixed = {**loaded.fixed, "epochs": epochs, "patience": epochs}
    return loaded.model_copy(update={"fixed": fixed, "objective": objective})


class Occupancy:
    """Active rows at each epoch of every population trained in this process, and whether the
    budget still had trials then (once a refill gets fewer than it asked, the population drains)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, bool]] = []
        self._run, self._epoch = _train._Training.run, _train._Training._epoch

    def __enter__(self) -> Occupancy:
        seen, run, epoch = self.rows, self._run, self._epoch
        draining = [False]

        def counted_run(training: _train._Training, members: list, refill: Any = None) -> None:
            def counted_refill(count: int) -> list:
                given = refill(count)
                draining[0] |= len(given) < count
                return given

            run(training, members, counted_refill if refill is not None else None)

        def counted_epoch(training: _train._Training, population: _train._Population, batch_size: int) -> None:
            seen.append((len(population.rows), draining[0]))
            epoch(training, population, batch_size)

        _train._Training.run, _train._Training._epoch = counted_run, counted_epoch  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        _train._Training.run, _train._Training._epoch = self._run, self._epoch  # type: ignore[method-assign]

    def of(self, k: int) -> str:
        """Mean active rows / K while the budget had trials, and over the whole search."""
        full = [rows for rows, draining in self.rows if not draining]
        if not self.rows:
            return ""
        return f"{sum(full) / (k * len(full)):.2f} / {sum(r for r, _ in self.rows) / (k * len(self.rows)):.2f}"


def plain(objective: str, searched: hpo.SearchSpace, n_trials: int, device: str) -> float:
    """Seconds for ``n_trials`` trials the usual way: the objective called by hand, one after another."""
    import numpy as np

    rng = np.random.default_rng(0)
    function = OBJECTIVES[objective]
    context = function.setup(device)
    started = time.perf_counter()
    for number in range(n_trials):
        params = {**searched.fixed, **searched.sample(rng)}
        function(params, hpo.Trial(number, seed=number, device=device, metric="val_loss", context=context))
    return time.perf_counter() - started


def search(objective: str, searched: hpo.SearchSpace, n_trials: int, folder: Path, device: str, *,
           population: int = 1, driver: str = "optuna", pruner: str = "none") -> tuple[float, list[hpo.TrialRecord]]:
    """Seconds for an hpo search, and its trials."""
    options = (hpo.RayOptions(cpus_per_trial=os.cpu_count() or 1, gpus_per_trial=1 if device == "cuda" else 0)
               if driver == "ray" else hpo.OptunaOptions(gpus="0" if device == "cuda" else "none"))
    started = time.perf_counter()
    result = hpo.search(objective, searched, strategy="random", n_trials=n_trials, home=folder, driver=options,
                        population=population, pruner=pruner, evaluate_test=False, quiet=True,
                        study_name=f"{searched.name}-k{population}-{driver}-{pruner}")
    return time.perf_counter() - started, result.trials


def epochs_trained(trials: list[hpo.TrialRecord]) -> float:
    """Epochs a trial trained, on average (its reports after the untrained step 0)."""
    return sum(max(0, len(t.curve) - 1) for t in trials) / len(trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objective", default="mnist1d_mlp", choices=["mnist1d_mlp", "mnist1d_cnn"])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="population sizes [32; on a GPU 128 1024]")
    parser.add_argument("--one-at-a-time-trials", type=int, default=8, help="trials of the plain loop and of K=1")
    parser.add_argument("--pruner", default="successive-halving")
    parser.add_argument("--pruned-trials", type=int, default=256,
                        help="trials of the pruned lr_wd search: the population drains once the budget is out, "
                             "so a budget of a few K shows the occupancy of a search rather than of its end")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray driver's rows")
    parser.add_argument("--spaces", nargs="+", default=["full", "lr_wd"], choices=["full", "lr_wd"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    ks = args.ks or ([128, 1024] if args.device == "cuda" else [32])
    few, epochs = args.one_at_a_time_trials, args.epochs
    full, lr_wd = space("full", args.objective, epochs), space("lr_wd", args.objective, epochs)
    rows: list[tuple[str, str, str, int, float, str, str]] = []
    # rows: space, runner, K, trials, seconds, occupancy, epochs a trial; the first two are the yardsticks

    def measured(*row: Any) -> None:
        """A row of the table, printed at once too: a run cut short keeps what it measured."""
        rows.append(row)
        print(*(f"{v:.1f}" if isinstance(v, float) else v for v in row), sep=" | ", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain_s = plain(args.objective, full, few, args.device)
        measured("full", "plain loop, one at a time", "-", few, plain_s, "", f"{epochs}")
        one_s, trials = search(args.objective, full, few, root / "one", args.device)
        measured("full", "hpo, one at a time", "1", few, one_s, "", f"{epochs_trained(trials):.1f}")
        for k in ks:
            n = max(args.trials, 2 * k)
            if "full" in args.spaces:
                with Occupancy() as occupancy:
                    seconds, trials = search(args.objective, full, n, root / f"full{k}", args.device, population=k)
                measured("full", "hpo optuna, population", str(k), n, seconds, occupancy.of(k),
                         f"{epochs_trained(trials):.1f}")
                if not args.no_ray:
                    seconds, trials = search(args.objective, full, n, root / f"ray{k}", args.device, population=k,
                                             driver="ray")
                    measured("full", "hpo ray, population", str(k), n, seconds, "",
                             f"{epochs_trained(trials):.1f}")
            if "lr_wd" in args.spaces:
                for pruner, count in (("none", n), (args.pruner, max(args.pruned_trials, n))):
                    with Occupancy() as occupancy:
                        seconds, trials = search(args.objective, lr_wd, count, root / f"lrwd{k}{pruner}",
                                                 args.device, population=k, pruner=pruner)
                    measured("lr_wd", f"hpo optuna, population, pruner {pruner}", str(k), count, seconds,
                             occupancy.of(k), f"{epochs_trained(trials):.1f}")
    one_rate = few / one_s * 3600
    table = Table(title=f"{args.objective}: trials per hour, random search, {epochs} epochs a trial, on "
                        f"{args.device}")
    for column in ("space", "runner", "K", "trials", "seconds", "trials/hour", "x hpo one at a time",
                   "occupancy (budget left / all)", "epochs a trial"):
        table.add_column(column, justify="right")
    for name, runner, k, n, seconds, occupancy, trained in rows:
        rate = n / seconds * 3600
        table.add_row(name, runner, k, str(n), f"{seconds:.1f}", f"{rate:.0f}", f"{rate / one_rate:.1f}x",
                      occupancy, trained)
    console = Console(width=180)
    console.print(table)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    console.print(f"device: {name}, {os.cpu_count()} CPUs; torch {torch.__version__}, "
                  f"python {platform.python_version()}")


if __name__ == "__main__":
    main()
