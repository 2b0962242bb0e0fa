"""The end-of-search summary: the data first (testable), then drawn with rich."""

from __future__ import annotations

from typing import NamedTuple

from rich.console import Console
from rich.table import Table

from hpo._plan import SearchResult
from hpo._trial import TrialState


class LeaderboardRow(NamedTuple):
    rank: int
    number: int
    stage: int
    value: float
    metrics: dict[str, float]
    params: dict[str, object]


def leaderboard(result: SearchResult, top: int = 10) -> list[LeaderboardRow]:
    """The ``top`` completed trials, best first."""
    sign = 1 if result.space.direction == "minimize" else -1
    complete = [t for t in result.trials if t.state is TrialState.COMPLETE and t.value is not None]
    ranked = sorted(complete, key=lambda t: (sign * t.value, t.number))[:top]  # type: ignore[operator]
    return [LeaderboardRow(i + 1, t.number, t.stage, t.value, t.metrics, t.params) for i, t in enumerate(ranked)]  # type: ignore[arg-type]


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(result: SearchResult, console: Console) -> None:
    rows = leaderboard(result)
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)
    counts = ", ".join(f"{result.count(s)} {s.value}" for s in ended)
    console.print(f"\n[bold]{result.study_name}[/]: {len(result.trials)} trials ({counts})")
    if not rows:
        console.print("[red]No trial completed[/]: see the reasons in MLflow (tag hpo.reason).")
    else:
        param_names = sorted({name for row in rows for name in row.params})
        extra = sorted({m for row in rows for m in row.metrics if m != result.metric and m.startswith("val_")})
        table = Table(title=f"Leaderboard ({result.space.direction} {result.metric})")
        for column in ["#", "trial", "stage", result.metric, *extra, *param_names]:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(
                str(row.rank), str(row.number), str(row.stage), _fmt(row.value),
                *(_fmt(row.metrics.get(m, "")) for m in extra),
                *(_fmt(row.params.get(p, "-")) for p in param_names),
            )
        console.print(table)
        best = result.best
        assert best is not None
        chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items())
        console.print(f"[bold]Best[/] trial {best.number}: {chosen}")
        scores = ", ".join(f"{k} {_fmt(v)}" for k, v in best.metrics.items() if k.startswith("val_"))
        console.print(f"  validation: {scores}")
        if result.test_metrics:
            tested = ", ".join(f"{k} {_fmt(v)}" for k, v in result.test_metrics.items())
            console.print(f"  [bold]test[/] (evaluated once): {tested}")
    console.print(
        f"MLflow: {result.tracking_uri}  experiment {result.space.name!r} "
        f"(id {result.experiment_id}), search run {result.parent_run_id}; `make ui` opens "
        f"http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
    )
