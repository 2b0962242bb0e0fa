"""Trials per hour with population training, against one trial at a time and warm workers.

A random search over learning rate, weight decay and dropout (64 trials by default) of the
MNIST-1D MLP or CNN, every trial the same number of epochs (no early stopping, no pruning), run:
- plain: the loop a user writes without hpo, one trial after another (a DataLoader, batches
  copied to the device), no study and no MLflow;
- hpo, K=1: one trial at a time, warm (data on the device once), full study and MLflow layout;
- hpo, warm workers: one process per slot (two on this CPU; --workers);
- hpo, population K: K trials claimed together and trained as one stacked model.
The plain loop and K=1 run fewer trials (their rate is flat); a population runs at least 2K
trials so that it is full twice. The plain loop counts its fastest of three runs, every hpo
row its only run, so the ratios err against hpo. hpo's times include its study, MLflow writes
and the report, and the test of nothing (``evaluate_test=False``).

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
    parser.add_argument("--plain-repeats", type=int, default=3,
                        help="the plain loop's time is its fastest of this many runs (the others: one run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    ks = args.ks or ([8, 32, 128, 1024] if args.device == "cuda" else [8, 32])
    rows = []
    few = args.one_at_a_time_trials
    seconds = min(plain(args.objective, few, args.device) for _ in range(args.plain_repeats))
    rows.append(("plain loop, one at a time", "-", few, seconds))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows.append(("hpo, one at a time", "1", few, with_hpo(args.objective, few, root / "k1", args.device)))
        n = max(args.trials, 2 * args.workers)
        rows.append((f"hpo, {args.workers} warm workers", "1", n,
                     with_hpo(args.objective, n, root / "workers", args.device, workers=args.workers)))
        for k in ks:
            n = max(args.trials, 2 * k)
            rows.append(("hpo, population", str(k), n, with_hpo(args.objective, n, root / f"k{k}", args.device,
                                                                 population=k)))
    plain_rate = rows[0][2] / rows[0][3] * 3600
    table = Table(title=f"{args.objective}: trials per hour, {EPOCHS} epochs a trial, on {args.device}")
    for column in ("runner", "K", "trials", "seconds", "trials/hour", "x plain"):
        table.add_column(column, justify="right")
    for name, k, n, seconds in rows:
        rate = n / seconds * 3600
        table.add_row(name, k, str(n), f"{seconds:.1f}", f"{rate:.0f}", f"{rate / plain_rate:.1f}x")
    console = Console(width=160)
    console.print(table)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    console.print(f"device: {name}, {os.cpu_count()} CPUs; torch {torch.__version__}, "
                  f"python {platform.python_version()}")


if __name__ == "__main__":
    main()
