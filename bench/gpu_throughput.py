"""Trials per hour on one GPU: a plain one-trial-at-a-time loop against hpo's warm workers.

The plain loop is what a user writes without hpo: per trial, a DataLoader over the training
set, batches copied to the GPU, the model trained and evaluated, one trial after another.
hpo runs the same built-in objective (MNIST-1D MLP or CNN) with K warm workers on the GPU
(``--gpus 0 --trials-per-gpu K``): each keeps its data and CUDA context on the device.
GPU utilisation is sampled with nvidia-smi while each runner runs. hpo's time includes
starting its workers and its study and MLflow writes; each worker runs 8 trials by default,
so that its start-up (spawn, imports, CUDA context, data) is spread over several trials, as in
a real search.

    python bench/gpu_throughput.py --objective mnist1d_cnn --ks 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import threading
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

PARAMS = {"lr": 3e-3, "epochs": 10, "batch_size": 64, "patience": 100}


class Utilisation:
    """Samples nvidia-smi's GPU utilisation every half second while in a ``with`` block."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> Utilisation:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def mean(self) -> str:
        return f"{statistics.mean(self.samples):.0f}%" if self.samples else "n/a"


def plain_trials(objective_name: str, n_trials: int, device: str) -> float:
    """Seconds for ``n_trials`` trials written the usual way, one at a time."""
    build = OBJECTIVES[objective_name].build
    splits = load_splits(OBJECTIVES[objective_name].dataset, "cpu")
    p = {**DEFAULTS, **PARAMS}
    started = time.perf_counter()
    for seed in range(n_trials):
        torch.manual_seed(seed)
        loader = DataLoader(TensorDataset(splits.x_train, splits.y_train), batch_size=p["batch_size"], shuffle=True)
        model = build(p, splits).to(device)
        optimizer = make_optimizer(p, model.parameters())
        for _ in range(p["epochs"]):
            model.train()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                val_loss = F.cross_entropy(model(splits.x_val.to(device)), splits.y_val.to(device)).item()
        assert val_loss == val_loss
    return time.perf_counter() - started


def hpo_trials(objective_name: str, n_trials: int, k: int, device: str, folder: Path) -> float:
    space = hpo.SearchSpace.model_validate(
        {"name": "throughput", "metric": "val_loss", "direction": "minimize", "objective": objective_name,
         "params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
         "fixed": {k: v for k, v in PARAMS.items() if k != "lr"}})
    gpus = "0" if device == "cuda" else "none"
    started = time.perf_counter()
    hpo.search(objective_name, space, strategy="random", n_trials=n_trials, home=folder, evaluate_test=False,
               driver=hpo.OptunaOptions(workers=k, gpus=gpus, trials_per_gpu=k), study_name=f"k{k}",
               population=1, quiet=True)  # warm workers, each one trial at a time (populations: population.py)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objective", default="mnist1d_cnn", choices=["mnist1d_cnn", "mnist1d_mlp"])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--trials-per-worker", type=int, default=8,
                        help="hpo trials per worker (at least 16 in all), so that start-up is amortised")
    parser.add_argument("--plain-trials", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rows = []

    def measured(*row: object) -> None:
        """A row of the table, printed at once too: a run cut short keeps what it measured."""
        rows.append(row)
        print(*(f"{v:.1f}" if isinstance(v, float) else v for v in row), sep=" | ", flush=True)

    with Utilisation() as util:
        seconds = plain_trials(args.objective, args.plain_trials, args.device)
    plain_rate = args.plain_trials / seconds * 3600
    measured("plain loop + DataLoader", "-", args.plain_trials, seconds, plain_rate, util.mean)
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.ks:
            n_trials = max(16, args.trials_per_worker * k)
            with Utilisation() as util:
                seconds = hpo_trials(args.objective, n_trials, k, args.device, Path(tmp) / f"k{k}")
            measured("hpo, warm workers", str(k), n_trials, seconds, n_trials / seconds * 3600, util.mean)
    title = f"{args.objective} trials per hour on one {args.device} device, {PARAMS['epochs']} epochs a trial"
    table = Table(title=title)
    for column in ("runner", "K", "trials", "seconds", "trials/hour", "x plain", "GPU util"):
        table.add_column(column, justify="right")
    for name, k, n, seconds, rate, utilisation in rows:
        table.add_row(name, k, str(n), f"{seconds:.1f}", f"{rate:.0f}", f"{rate / plain_rate:.1f}x", utilisation)
    Console(width=160).print(table)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    Console(width=160).print(f"device: {name}; torch {torch.__version__}")


if __name__ == "__main__":
    main()
