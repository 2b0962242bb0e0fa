"""How fast ``hpo`` answers when it has nothing to run: ``--help`` and a refused space.

Each command runs in a fresh process, ``--repeats`` times; the table gives the median wall time
beside a bare ``python -c pass`` and beside importing what a search needs (torch, Optuna,
MLflow), which is what every answer cost while ``import hpo`` loaded them all.
Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HPO = str(Path(sys.executable).with_name("hpo"))
BROKEN = "metric: val_loss\ndirection: minimize\nparams: {lr: {type: float, low: 0.1, high: 0.01}}\n"


def wall(command: list[str], cwd: str, expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "broken.yaml").write_text(BROKEN)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], 0),
            "hpo --help": ([HPO, "--help"], 0),
            "hpo search --help": ([HPO, "search", "--help"], 0),
            "hpo search broken.yaml (refused, exit 2)": ([HPO, "search", "broken.yaml"], 2),
            "import torch, optuna, mlflow": ([sys.executable, "-c", "import torch, optuna, mlflow"], 0),
        }
        times = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, (command, expect) in commands.items():
                times[name].append(wall(command, tmp, expect))
    heavy = statistics.median(times["import torch, optuna, mlflow"])
    table = Table(title=f"Answers without running anything: median of {args.repeats} fresh processes")
    for column in ("command", "seconds", "min", "max", "/ importing torch, optuna, mlflow"):
        table.add_column(column, justify="right")
    for name, values in times.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:.2f}", f"{min(values):.2f}", f"{max(values):.2f}", f"{median / heavy:.2f}")
    console = Console(width=160)
    console.print(table)
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")


if __name__ == "__main__":
    main()
