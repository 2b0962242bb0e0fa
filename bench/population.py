"""Trials per hour with population training, against one trial at a time and warm workers.

A random search over learning rate, weight decay and dropout (64 trials by default) of the
MNIST-1D MLP or CNN, every trial the same number of epochs (no early stopping, no pruning), run:
- plain: the loop a user writes without hpo, one trial after another (a DataLoader, batches
  copied to the device), no study and no MLflow;
- hpo, K=1: one trial at a time, warm (data on the device once), full study and MLflow layout;
- hpo, warm workers: one process per slot (two on this CPU; --workers);
- hpo, population K: K trials claimed together and trained as one stacked model.
The plain loop and K=1 run fewer trials (their rate is flat); a population runs at least 2K
trials so that it is full twice. The plain loop and the populations run in turns, ``--rounds``
times (the machine's speed drifts within minutes), and each counts its fastest run; the last
column gives each round's ratio. K=1 and the workers run once. hpo's times include its study, MLflow writes
and the report, and the test of nothing (``evaluate_test=False``). Last, each population's
training alone, a step's time (what the search adds to it is the rest of its time).

    python bench/population.py --objective mnist1d_mlp --ks 8 32
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

import hpo
from objectives import OBJECTIVES
from objectives._data import load_splits
from objectives._training import DEFAULTS, make_optimizer

EPOCHS = 10


def space(objective: str) -> hpo.SearchSpace:
    return hpo.SearchSpace.model_validate({
        "name": "population", "metric": "val_loss", "direction": "minimize", "objective": objective,
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                   "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                   "dropout": {"type": "float", "low": 0.0, "high": 0.5}},
        "fixed": {"epochs": EPOCHS, "patience": EPOCHS, "batch_size": 64},
    })


def plain(objective: str, n_trials: int, device: str) -> float:
    """Seconds for ``n_trials`` trials written the usual way, one at a time."""
    import numpy as np

    build = OBJECTIVES[objective].build
    splits = load_splits(OBJECTIVES[objective].dataset, "cpu")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for seed in range(n_trials):
        p = {**DEFAULTS, "lr": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-6, -2),
             "dropout": rng.uniform(0, 0.5), "epochs": EPOCHS}
        torch.manual_seed(seed)
        loader = DataLoader(TensorDataset(splits.x_train, splits.y_train), batch_size=p["batch_size"], shuffle=True)
        model = build(p, splits).to(device)
        optimizer = make_optimizer(p, model.parameters())
        for _ in range(EPOCHS):
            model.train()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                F.cross_entropy(model(splits.x_val.to(device)), splits.y_val.to(device)).item()
    return time.perf_counter() - started


def training_alone(objective: str, k: int, device: str) -> float:
    """Seconds a step for K members trained together by ``hpo.population`` with no study, no
    MLflow and no search around them (the fastest of two populations, the first one warming up)."""
    import numpy as np

    from hpo.population import train_population

    rng = np.random.default_rng(0)
    params = [{"lr": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-6, -2),
               "dropout": rng.uniform(0, 0.5), "epochs": EPOCHS, "patience": EPOCHS, "batch_size": 64}
              for _ in range(k)]
    trials = [hpo.Trial(seed, seed=seed, metric="val_loss", device=device) for seed in range(k)]
    recipe = OBJECTIVES[objective].population(params[0], trials[0])
    fastest = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        train_population(recipe, list(zip(params, trials, strict=True)), "val_loss")
        fastest = min(fastest, time.perf_counter() - started)
    steps = EPOCHS * -(-len(recipe.train[1]) // 64)
    return fastest / steps


def with_hpo(objective: str, n_trials: int, folder: Path, device: str, *, population: int = 1,
             workers: int = 1) -> float:
    gpus = "0" if device == "cuda" else "none"
    options = hpo.OptunaOptions(workers=workers, gpus=gpus, trials_per_gpu=workers)
    started = time.perf_counter()
    hpo.search(objective, space(objective), strategy="random", n_trials=n_trials, home=folder, driver=options,
               population=population, evaluate_test=False, study_name=f"k{population}-w{workers}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objective", default="mnist1d_mlp", choices=["mnist1d_mlp", "mnist1d_cnn"])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=None,
                        help="population sizes [8 32; on a GPU also 128 1024]")
    parser.add_argument("--one-at-a-time-trials", type=int, default=8, help="trials of the plain loop and of K=1")
    parser.add_argument("--workers", type=int, default=2, help="warm worker processes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the plain loop and the populations, one after the other; each counts "
                             "its fastest (hpo one at a time and its workers: one run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    ks = args.ks or ([8, 32, 128, 1024] if args.device == "cuda" else [8, 32])
    few = args.one_at_a_time_trials
    plains: list[float] = []
    populations: dict[int, list[float]] = {k: [] for k in ks}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The machine's speed drifts within minutes: the plain loop and the populations take
        # turns, so that each round compares them at about the same speed.
        for round_ in range(args.rounds):
            plains.append(plain(args.objective, few, args.device))
            for k in ks:
                populations[k].append(with_hpo(args.objective, max(args.trials, 2 * k), root / f"k{k}-{round_}",
                                               args.device, population=k))
        one = with_hpo(args.objective, few, root / "k1", args.device)
        n_workers = max(args.trials, 2 * args.workers)
        workers = with_hpo(args.objective, n_workers, root / "workers", args.device, workers=args.workers)
    rows = [("plain loop, one at a time", "-", few, plains), ("hpo, one at a time", "1", few, [one]),
            (f"hpo, {args.workers} warm workers", "1", n_workers, [workers])]
    rows += [("hpo, population", str(k), max(args.trials, 2 * k), populations[k]) for k in ks]
    plain_rate = few / min(plains) * 3600
    table = Table(title=f"{args.objective}: trials per hour, {EPOCHS} epochs a trial, on {args.device} "
                        f"(fastest of {args.rounds} rounds where there are several)")
    for column in ("runner", "K", "trials", "seconds", "trials/hour", "x plain", "x plain, each round"):
        table.add_column(column, justify="right")
    for name, k, n, times in rows:
        rate = n / min(times) * 3600
        rounds = (" ".join(f"{n / t / (few / p):.1f}x" for t, p in zip(times, plains, strict=True))
                  if name == "hpo, population" else "")
        table.add_row(name, k, str(n), f"{min(times):.1f}", f"{rate:.0f}", f"{rate / plain_rate:.1f}x", rounds)
    console = Console(width=160)
    console.print(table)
    for k in ks:
        console.print(f"K={k}, training alone (hpo.population, no study, no MLflow): "
                      f"{training_alone(args.objective, k, args.device) * 1e3:.2f} ms a step of {k} members")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    console.print(f"device: {name}, {os.cpu_count()} CPUs; torch {torch.__version__}, "
                  f"python {platform.python_version()}")


if __name__ == "__main__":
    main()
