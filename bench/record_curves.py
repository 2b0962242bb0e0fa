"""Record real learning curves for the simulated driver to replay (``tests/data/``).

Runs a random search of the MNIST-1D MLP over learning rate and weight decay (``bench/quality.py``'s
space: 30 epochs, early stopping after 8), one trial at a time, and keeps each trial's
configuration and, for every epoch it reported, the seconds it took and its metrics.

    python bench/record_curves.py                       # 32 trials into tests/data/mnist1d_mlp_curves.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import hpo
from objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]


class Timed:
    """The built-in objective, with each report's wall time since the previous one noted."""

    def __init__(self, name: str) -> None:
        self.inner = OBJECTIVES[name]
        self.steps: dict[int, list[list[Any]]] = {}

    def setup(self, device: str) -> Any:
        return self.inner.setup(device)

    def __call__(self, params: dict, trial: Any) -> dict[str, float]:
        last = time.perf_counter()

        def report(step: int, **metrics: float) -> None:
            nonlocal last
            now = time.perf_counter()
            self.steps.setdefault(trial.number, []).append(
                [step, round(now - last, 4), {k: float(f"{v:.5g}") for k, v in metrics.items()}])
            last = now
            trial.report(step, **metrics)

        _, metrics = self.inner.fit(params, trial, report=report)
        return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "mnist1d_mlp_curves.json")
    args = parser.parse_args()
    from quality import space  # the quality benchmark's space, so that its figures and these agree

    objective = Timed("mnist1d_mlp")
    with tempfile.TemporaryDirectory() as home:
        result = hpo.search(objective, space("mnist1d_mlp", 30), strategy="random", n_trials=args.trials,
                            seed=args.seed, population=1, driver=hpo.OptunaOptions(workers=1), home=home,
                            evaluate_test=False, quiet=True)
    records = [{"params": t.params, "steps": objective.steps[t.number]} for t in result.trials]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "source": f"python bench/record_curves.py --trials {args.trials} --seed {args.seed}",
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "objective": "mnist1d_mlp", "metric": "val_loss", "direction": "minimize", "records": records,
    }) + "\n")
    print(f"{len(records)} curves, {sum(len(r['steps']) for r in records)} steps: {args.out}")


if __name__ == "__main__":
    main()
