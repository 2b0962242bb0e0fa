"""Search quality: which strategy and pruner find better models, at equal budget.

For each objective (MNIST-1D MLP and CNN, scikit-learn digits MLP), strategy (grid, random,
coarse-to-fine, tpe) and pruner (none, median, successive-halving, hyperband), and ``--seeds``
seeds: one search of ``--trials`` trials over learning rate and weight decay (21 by default:
the grid of 7 learning rates and 3 weight decays, so that the grid has the same budget), one
trial at a time (or ``--population`` at once, rows refilled as members stop), the objective's
own training (``--epochs`` epochs, early stopping after 8 without improvement). The searches
select on validation loss; every trial that finishes also records its best epoch's test
accuracy, for this benchmark only (population members: their configuration trained alone).

To learn what pruning cost, every pruned trial is then trained to its end (a trial with the
same configuration and seed that ran to its end in another search of this benchmark is reused):
"top-10% pruned" counts, of each search's best tenth of trials (pruned ones at their would-be
end), those that pruning stopped.

    python bench/quality.py                          # runs what is missing, then reports
    python bench/quality.py --objectives digits_mlp --seeds 1 --trials 9   # a quick look
    python bench/quality.py --report                 # tables and plots from the results alone

Results (one JSON file per search) are kept in ``--results``, so a run that stops resumes; the
report writes docs/quality/*.png and prints the tables of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import hpo
from objectives import OBJECTIVES
from objectives._training import evaluate

STRATEGIES = ("grid", "random", "coarse-to-fine", "tpe")
PRUNINGS = {
    "none": hpo.Pruning(),
    "median": hpo.Pruning(pruner="median"),
    "successive-halving": hpo.Pruning(pruner="successive-halving"),
    "hyperband": hpo.Pruning(pruner="hyperband"),
    # The rule before it waited a fifth of the epochs and compared within stages:
    "median-2-steps-all-stages": hpo.Pruning(pruner="median", warmup_steps=2, by_stage=False),
    # Successive halving's first rung at a tenth of 30 epochs (rungs at 3, 9, 27) instead of a fifth:
    "successive-halving-3-steps": hpo.Pruning(pruner="successive-halving", warmup_steps=3),
    "median-2-trials": hpo.Pruning(pruner="median", warmup_trials=2),
    "median-3-steps-2-trials": hpo.Pruning(pruner="median", warmup_steps=3, warmup_trials=2),
    "hyperband-3-steps": hpo.Pruning(pruner="hyperband", warmup_steps=3),
}
PRUNERS = tuple(PRUNINGS)
EPOCHS = {"mnist1d_mlp": 30, "mnist1d_cnn": 20, "digits_mlp": 30}
ROOT = Path(__file__).resolve().parents[1]


def space(objective: str, epochs: int) -> hpo.SearchSpace:
    return hpo.SearchSpace.model_validate({
        "name": "quality", "metric": "val_loss", "direction": "minimize", "objective": objective,
        "params": {
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True,
                   "grid": [0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001]},
            "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True, "grid": [1e-5, 1e-4, 1e-3]},
        },
        "fixed": {"epochs": epochs, "patience": 8},
    })


class WithTest:
    """A built-in objective whose finished trials also return their best epoch's test accuracy,
    and which counts each trial's reports (the epochs it trained, pruned ones included)."""

    def __init__(self, name: str) -> None:
        self.inner = OBJECTIVES[name]
        self.reports: dict[int, int] = {}

    def setup(self, device: str) -> Any:
        return self.inner.setup(device)

    def __call__(self, params: dict, trial: Any) -> dict[str, float]:
        def report(step: int, **metrics: float) -> None:
            self.reports[trial.number] = step
            trial.report(step, **metrics)

        return finished(self.inner, params, trial, report)


def finished(objective: Any, params: dict, trial: Any, report: Any = None) -> dict[str, float]:
    model, metrics = objective.fit(params, trial, report=report)
    splits = trial.context if trial.context is not None else objective.setup(str(trial.device))
    _, accuracy = evaluate(model, splits.x_test, splits.y_test)
    return {**metrics, "test_accuracy": accuracy}


def run_search(objective: str, strategy: str, pruner: str, seed: int, trials: int, epochs: int,
               home: Path, population: int = 1) -> dict[str, Any]:
    """One search; with ``population`` above 1 its trials train stacked, rows refilled as members
    stop, and their test accuracy is filled in afterwards (``fill_test``)."""
    wrapped = WithTest(objective) if population == 1 else OBJECTIVES[objective]
    name = _name(objective, strategy, pruner, seed, population)
    started = time.perf_counter()
    result = hpo.search(wrapped, space(objective, epochs), strategy=strategy, pruner=PRUNINGS[pruner], seed=seed,
                        n_trials=trials, population=population, driver=hpo.OptunaOptions(workers=1), home=home,
                        experiment=objective, study_name=name, evaluate_test=False)
    return {
        "objective": objective, "strategy": strategy, "pruner": pruner, "seed": seed, "population": population,
        "seconds": time.perf_counter() - started,
        "trials": [{"number": t.number, "params": t.params, "state": t.state.value, "reason": t.reason,
                    "stage": t.stage, "value": t.value, "metrics": t.metrics, "seed": t.seed,
                    "epochs": max((step for step, _ in t.curve), default=0)} for t in result.trials],
    }


def finish_pruned(searches: list[dict[str, Any]]) -> None:
    """Each pruned trial's would-be end: its value and test accuracy had it run to its end."""
    ended: dict[tuple, dict] = {}
    for search in searches:
        for trial in search["trials"]:
            if trial["state"] == "complete":
                ended[_key(search["objective"], trial)] = trial["metrics"]
    for search in searches:
        for trial in search["trials"]:
            if trial["state"] != "pruned" or "would_be" in trial:
                continue
            key = _key(search["objective"], trial)
            if key not in ended:
                ended[key] = trained_alone(search["objective"], trial)
            trial["would_be"] = ended[key]


def fill_test(searches: list[dict[str, Any]]) -> None:
    """The test accuracy of each trial that was a search's best so far, where the search did not
    record it (population members): its configuration and seed trained alone, which a member
    equals (tests/test_population.py)."""
    tested: dict[tuple, dict] = {_key(s["objective"], t): t["metrics"] for s in searches for t in s["trials"]
                                 if "test_accuracy" in t["metrics"]}
    for search in searches:
        best = None
        for trial in sorted(search["trials"], key=lambda t: t["number"]):
            if trial["state"] != "complete" or (best is not None and not trial["value"] < best):
                continue
            best = trial["value"]
            if "test_accuracy" not in trial["metrics"]:
                key = _key(search["objective"], trial)
                if key not in tested:
                    tested[key] = trained_alone(search["objective"], trial)
                trial["metrics"]["test_accuracy"] = tested[key]["test_accuracy"]


def trained_alone(objective: str, trial: dict) -> dict[str, float]:
    """A recorded trial's configuration trained alone to its end, with its seed: its metrics and test accuracy."""
    params = {**space(objective, EPOCHS[objective]).fixed, **trial["params"]}
    return finished(OBJECTIVES[objective], params, hpo.Trial(trial["number"], seed=trial["seed"]))


def _name(objective: str, strategy: str, pruner: str, seed: int, population: int = 1) -> str:
    return f"{objective}-{strategy}-{pruner}{f'-pop{population}' if population > 1 else ''}-seed{seed}"


def _key(objective: str, trial: dict) -> tuple:
    return objective, json.dumps(trial["params"], sort_keys=True), trial["seed"]


# -- the report -----------------------------------------------------------------------------
def summary(search: dict[str, Any]) -> dict[str, Any]:
    """What one search found, what it cost, and what its pruning cost."""
    trials = sorted(search["trials"], key=lambda t: t["number"])
    complete = [t for t in trials if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["value"]) if complete else None
    ends = {t["number"]: t["value"] if t["state"] == "complete" else t.get("would_be", {}).get("val_loss")
            for t in trials}
    finite = {n: v for n, v in ends.items() if v is not None and math.isfinite(v)}
    top_count = max(1, round(0.1 * len(finite)))
    top = sorted(finite, key=finite.get)[:top_count]
    pruned = {t["number"] for t in trials if t["state"] == "pruned"}
    curve_trials, curve_epochs, spent, best_so_far = [], [], 0, None
    for trial in trials:
        spent += trial["epochs"]
        if trial["state"] == "complete" and (best_so_far is None or trial["value"] < best_so_far["value"]):
            best_so_far = trial
        accuracy = best_so_far["metrics"]["test_accuracy"] if best_so_far else math.nan
        curve_trials.append(accuracy)
        curve_epochs.append((spent, accuracy))
    return {
        "best_val_loss": best["value"] if best else math.nan,
        "best_val_accuracy": best["metrics"]["val_accuracy"] if best else math.nan,
        "best_test_accuracy": best["metrics"]["test_accuracy"] if best else math.nan,
        "epochs": spent, "top": len(top), "top_pruned": len(set(top) & pruned),
        "pruned": len(pruned), "trials": len(trials),
        "curve_trials": curve_trials, "curve_epochs": curve_epochs,
    }


def pays_off(pruned: dict[str, Any], unpruned: dict[str, Any]) -> bool:
    """Issue 27's bar for a pruner on one seed: the unpruned search's best test accuracy within
    0.5 points, with at most a third of its epochs."""
    return (pruned["best_test_accuracy"] >= unpruned["best_test_accuracy"] - 0.005
            and pruned["epochs"] <= unpruned["epochs"] / 3)


def _spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values if not math.isnan(v)]
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def report(searches: list[dict[str, Any]], docs: Path) -> None:
    """Print the tables, and write them (``docs/tables.md``) and the plots (``docs/*.png``)."""
    console = Console(width=200)
    tables: list[str] = []
    by_objective: dict[str, list[dict]] = {}
    for search in searches:
        by_objective.setdefault(search["objective"], []).append(search)
    for objective, runs in by_objective.items():
        summaries = [(run, summary(run)) for run in runs]
        best_known = max(s["best_test_accuracy"] for _, s in summaries if not math.isnan(s["best_test_accuracy"]))
        lowest_loss = min(s["best_val_loss"] for _, s in summaries if not math.isnan(s["best_val_loss"]))
        unpruned_best = {}  # (strategy, seed) -> the test accuracy the unpruned search found
        for run, s in summaries:
            if run["pruner"] == "none":
                unpruned_best[(run["strategy"], run["seed"])] = s
        columns = ("strategy", "pruner", "seeds", "test acc %", "val acc %", "val loss", "regret (val loss)",
                   "regret (test pts)", "epochs", "epochs / unpruned", "top-10% pruned", "pays")
        table = Table(title=f"{objective}: best of each search (median \\[min, max] over seeds)")
        for column in columns:
            table.add_column(column, justify="right")
        markdown = [f"### {objective}", "", "| " + " | ".join(columns) + " |",
                    "| " + " | ".join(["---"] * 2 + ["---:"] * (len(columns) - 2)) + " |"]
        for strategy in STRATEGIES:
            for pruner in PRUNERS:
                group = [(r, s) for r, s in summaries if r["strategy"] == strategy and r["pruner"] == pruner]
                if not group:
                    continue
                ratios = [s["epochs"] / unpruned_best[(r["strategy"], r["seed"])]["epochs"] for r, s in group
                          if (r["strategy"], r["seed"]) in unpruned_best]
                pays = [pays_off(s, unpruned_best[(r["strategy"], r["seed"])]) for r, s in group
                        if (r["strategy"], r["seed"]) in unpruned_best]
                row = (
                    strategy, pruner, str(len(group)),
                    _spread([s["best_test_accuracy"] for _, s in group], 100),
                    _spread([s["best_val_accuracy"] for _, s in group], 100),
                    _spread([s["best_val_loss"] for _, s in group], 1, 3),
                    _spread([s["best_val_loss"] - lowest_loss for _, s in group], 1, 3),
                    _spread([best_known - s["best_test_accuracy"] for _, s in group], 100),
                    f"{statistics.median([s['epochs'] for _, s in group]):.0f}",
                    f"{statistics.median(ratios):.2f}" if ratios else "-",
                    f"{sum(s['top_pruned'] for _, s in group)} of {sum(s['top'] for _, s in group)}"
                    if pruner != "none" else "-",
                    f"{sum(pays)} of {len(pays)}" if pruner != "none" and pays else "-",
                )
                table.add_row(*row)
                markdown.append("| " + " | ".join(row) + " |")
        console.print(table)
        plot(objective, summaries, docs)
        tables.append("\n".join(markdown))
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "tables.md").write_text("\n\n".join(tables) + "\n")


def plot(objective: str, summaries: list[tuple[dict, dict]], docs: Path) -> None:
    """Test accuracy of the best configuration so far, against trials (each strategy, no pruner)
    and against epochs trained (each pruner, on coarse-to-fine where it ran, else the first
    strategy that did), the median over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_trials, by_epochs) = plt.subplots(1, 2, figsize=(12, 4.5))
    for strategy in STRATEGIES:
        curves = [s["curve_trials"] for r, s in summaries if r["strategy"] == strategy and r["pruner"] == "none"]
        if curves:
            median = np.nanmedian(np.array([c[: min(map(len, curves))] for c in curves]), axis=0)
            by_trials.plot(range(1, len(median) + 1), 100 * median, label=strategy)
    by_trials.set(xlabel="trials", ylabel="test accuracy of the best so far (%)", title=f"{objective}: strategies")
    by_trials.legend()
    ran = {r["strategy"] for r, _ in summaries}
    pruned_with = "coarse-to-fine" if "coarse-to-fine" in ran else next(s for s in STRATEGIES if s in ran)
    for pruner in PRUNERS:
        curves = [s["curve_epochs"] for r, s in summaries if r["strategy"] == pruned_with and r["pruner"] == pruner]
        if curves:
            grid = np.linspace(0, max(c[-1][0] for c in curves), 100)
            values = [np.interp(grid, [e for e, _ in c], [np.nan_to_num(a) for _, a in c]) for c in curves]
            by_epochs.plot(grid, 100 * np.median(values, axis=0), label=pruner)
    by_epochs.set(xlabel="epochs trained", ylabel="test accuracy of the best so far (%)",
                  title=f"{objective}: pruners ({pruned_with})")
    by_epochs.legend()
    figure.tight_layout()
    docs.mkdir(parents=True, exist_ok=True)
    figure.savefig(docs / f"{objective}.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=list(EPOCHS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--pruners", nargs="+", default=list(PRUNERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=21)
    parser.add_argument("--population", type=int, default=1,
                        help="train this many trials at once, rows refilled as members stop (default 1)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "quality")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "quality")
    parser.add_argument("--report", action="store_true", help="only report on the results there are")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.report:
        with tempfile.TemporaryDirectory() as home:
            for objective in args.objectives:
                for seed in range(args.seeds):
                    for strategy in args.strategies:
                        for pruner in args.pruners:
                            path = args.results / f"{_name(objective, strategy, pruner, seed, args.population)}.json"
                            if path.exists():
                                continue
                            search = run_search(objective, strategy, pruner, seed, args.trials, EPOCHS[objective],
                                                Path(home) / objective, args.population)
                            path.write_text(json.dumps(search))
                            print(f"{path.name}: {search['seconds']:.0f} s", flush=True)
        searches = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
        finish_pruned(searches)
        fill_test(searches)
        for search in searches:
            name = _name(search["objective"], search["strategy"], search["pruner"], search["seed"],
                         search.get("population", 1))
            (args.results / f"{name}.json").write_text(json.dumps(search))
    searches = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
    report([s for s in searches if s["objective"] in args.objectives], args.docs)
    Console().print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
                    f"{len(searches)} searches; this run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
