"""Two searches on one machine: what torch's OpenMP threads cost when they share the cores.

Each run trains the MNIST-1D MLP of ``lr_wd`` (512 units) for 3 epochs in a fresh process, as a
population of 8 members and as one trial alone, with torch's threads at the machine's cores:
once alone on the machine, then two such processes at once (a search and an ``hpo worker``
beside it, or two searches). libgomp's threads spin before they sleep, 300,000 times by
default; ``hpo`` sets ``GOMP_SPINCOUNT`` to ``hpo.SPIN_COUNT`` (unless ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` is set). Median of ``--repeats``. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

TRAIN = """
import os, sys, time
import hpo, torch
from hpo import Trial
from hpo.population import fit, train_population
from objectives import mnist1d_mlp

context = mnist1d_mlp.setup("cpu")
members = int(sys.argv[1])
params = [{"lr": 1e-3 * (i + 1), "weight_decay": 1e-4, "epochs": 3, "patience": 10, "hidden": 512,
           "dropout": 0.5, "optimizer": "adamw", "batch_size": 64} for i in range(members)]
trials = [Trial(i, seed=i, metric="val_loss", context=context) for i in range(members)]
recipe = mnist1d_mlp.population(params[0], trials[0])
started = time.perf_counter()
if members == 1:
    fit(recipe, params[0], trials[0])
else:
    train_population(recipe, list(zip(params, trials)), "val_loss")
print(time.perf_counter() - started)
"""

SETTINGS = {"libgomp's default (300,000)": "300000"}


def timed(members: int, spin: str, together: int) -> list[float]:
    """Seconds each of ``together`` processes took to train, started at once."""
    env = {**os.environ, "GOMP_SPINCOUNT": spin, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    runs = [subprocess.Popen([sys.executable, "-c", TRAIN, str(members)], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(together)]
    return [float(run.communicate()[0]) for run in runs]


def main() -> None:
    import hpo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = {**SETTINGS, f"hpo's ({int(hpo.SPIN_COUNT):,})": hpo.SPIN_COUNT}
    table = Table(title=f"Training beside another process: seconds, median of {args.repeats} "
                        f"({os.cpu_count()} cores, {platform.machine()})")
    for column in ["workload", "GOMP_SPINCOUNT", "alone", "two at once (each)", "slowdown"]:
        table.add_column(column, justify="right")
    for members, workload in [(8, "population of 8"), (1, "one trial")]:
        for label, spin in settings.items():
            alone = statistics.median(timed(members, spin, 1)[0] for _ in range(args.repeats))
            pair = statistics.median(max(timed(members, spin, 2)) for _ in range(args.repeats))
            table.add_row(workload, label, f"{alone:.1f}", f"{pair:.1f}", f"{pair / alone:.1f}x")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
