"""The search report: the whole search in plots and a ranked leaderboard, as PNG files and one
self-contained HTML page, drawn from the study alone (no MLflow needed).

Optuna's own plots where they exist (parameter importances, metric against each parameter on
its scale, parallel coordinates); the history and the learning curves are drawn here, because
they show what Optuna's cannot: coarse-to-fine stages and pruned trials where they ranked.

    >>> report = write_report(store, Path(".hpo/reports/lr_wd"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import itertools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.spaces import direction_sign
from hpo.trial import TrialRecord, TrialState, by_state, how_it_ended, ranking, shown

if TYPE_CHECKING:
    from hpo.store import TrialStore

ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED)
MARKERS = {TrialState.COMPLETE: "o", TrialState.PRUNED: "x"}

CURVES = "Learning curves of the best trials"

IMPORTANCE_MIN_TRIALS = 11
"""PED-ANOVA weighs where the best tenth of the trials lies against all of them, and needs two
trials in that tenth to say where (Optuna's guide asks for five): with fewer complete trials the
importances would rank noise, so they are not drawn."""


@dataclass(frozen=True)
class RankedTrial:
    """A row of the leaderboard: every trial that has a value, complete or pruned (at its best
    before it was stopped), best first; failed ones last."""

    rank: int
    record: TrialRecord
    run_id: str = ""


def ranked(trials: Sequence[TrialRecord], direction: str,
           run_ids: Mapping[int, str] | None = None) -> list[RankedTrial]:
    run_ids = run_ids or {}
    return [RankedTrial(i + 1, t, run_ids.get(t.number, t.run_id))
            for i, t in enumerate(ranking(trials, direction_sign(direction)))]


def leaderboard_csv(rows: Sequence[RankedTrial], metric: str) -> str:
    names = sorted({name for row in rows for name in row.record.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "trial", "state", metric, "stage", "reason", "run_id", *names])
    for row in rows:
        t = row.record
        writer.writerow([row.rank, t.number, t.state.value, t.value, t.stage, how_it_ended(t, metric), row.run_id,
                         *(t.params.get(n) for n in names)])
    return out.getvalue()


def write_report(store: TrialStore, out: Path, *, run_ids: Mapping[int, str] | None = None,
                 test_metrics: Mapping[str, float] | None = None) -> Path:
    """Plots (``out/*.png``), ``out/leaderboard.csv`` and ``out/report.html`` for the search of
    ``store``'s study; returns the HTML page's path."""
    from hpo.plan import SearchPlan

    saved_plan, tracking = store.saved()
    plan = SearchPlan.from_json(saved_plan)
    first_step = 1 if tracking.get("untrained_step_zero") == "True" else 0  # step 0 untrained: left out
    trials = [t for t in store.trials() if t.finished]
    test_metrics = test_metrics or store.tested()
    space = plan.space
    rows = ranked(trials, space.direction, run_ids)
    drawn_from = _inputs(saved_plan, tracking, [(row.record.to_json(), row.run_id) for row in rows], test_metrics)
    if _drawn_already(out, drawn_from):
        return out / "report.html"
    out.mkdir(parents=True, exist_ok=True)
    (out / DRAWN_FROM).unlink(missing_ok=True)
    (out / "leaderboard.csv").write_text(leaderboard_csv(rows, space.metric))
    plots = _plots(store, trials, plan, out, first_step)
    page = _html(plan, rows, plots, test_metrics)
    (out / "report.html").write_text(page, encoding="utf-8")
    files = ["report.html", "leaderboard.csv", *(path.name for path in plots.values())]
    (out / DRAWN_FROM).write_text(json.dumps({"inputs": drawn_from, "files": files}))
    return out / "report.html"


DRAWN_FROM = ".drawn-from.json"
"""Beside a report: what it was drawn from (a digest) and its files. A rerun of a search with
nothing left to run, or ``hpo report`` again, keeps the report (a second and more to draw) where
the study, its runs and this module are as they were and no file of it is gone."""


def _inputs(*parts: Any) -> str:
    """A digest of what a report is drawn from, this module's code included."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(parts, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _drawn_already(out: Path, inputs: str) -> bool:
    try:
        drawn = json.loads((out / DRAWN_FROM).read_text())
        return drawn["inputs"] == inputs and all((out / name).is_file() for name in drawn["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- plots ------------------------------------------------------------------------------------
def _plots(store: TrialStore, trials: list[TrialRecord], plan: Any, out: Path, first_step: int) -> dict[str, Path]:
    """Each plot there is data for, by title (learning curves from ``first_step``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as optuna_plots

    space = plan.space
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    drawn: dict[str, Path] = {}

    def png(name: str, draw: Any, width: float | None = None) -> Path | None:
        """``out/NAME.png`` as ``draw`` draws it, or None where there are too few trials for it."""
        plt.close("all")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's plots are "experimental"
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials for this plot
            return None
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        if width is not None:  # a panel or axis per parameter: room for its labels, at the page's scale
            figure.set_figwidth(width)
        readable_log_ticks(figure)
        figure.savefig(out / f"{name}.png", dpi=100)
        return out / f"{name}.png"

    def save(title: str, name: str, draw: Any, width: float | None = None) -> None:
        if (path := png(name, draw, width)) is not None:
            drawn[title] = path

    if trials:
        save("History: each trial's value and the best so far", "history", lambda: _history(trials, plan))
    if complete and has_curves(trials, first_step):
        save(CURVES, "curves", lambda: _curves(trials, plan, first_step))
    study = store.study
    target = {"target_name": space.metric}
    if len(complete) >= 2 and space.params:
        names = sorted(space.params)
        rows = [names[i : i + _SLICE_ROW] for i in range(0, len(names), _SLICE_ROW)]
        # Optuna draws one row of panels: at six parameters, its labels were half size on the page
        slices = [png(f"slice-{i}", lambda row=row: optuna_plots.plot_slice(study, params=row, **target),
                      width=_PAGE_IN if len(rows) > 1 else None) for i, row in enumerate(rows)]
        if parts := [path for path in slices if path is not None]:
            drawn[f"{space.metric} against each parameter (log axis where log-scaled)"] = _stacked(
                parts, out / "slice.png")
    if len(complete) >= IMPORTANCE_MIN_TRIALS and len(space.params) >= 2:
        # PED-ANOVA: fANOVA's random forest took 6 s for 200 trials on 2 cores, this a fraction of one
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        save("Parameter importances (PED-ANOVA)", "importances",
             lambda: optuna_plots.plot_param_importances(study, evaluator=evaluator, **target))
    if len(complete) >= 3 and len(space.params) >= 2:
        save("Parallel coordinates", "parallel", lambda: optuna_plots.plot_parallel_coordinate(study, **target),
             width=min(_PAGE_IN, 1.5 * len(space.params) + 3))
    plt.close("all")
    return drawn


_SLICE_ROW = 3
"""Parameters in a row of the slice plot."""
_PAGE_IN = 10.8
"""The report page's width for images, in inches at 100 dpi: a wider one is shrunk, its text with it."""


def _stacked(parts: list[Path], path: Path) -> Path:
    """The images ``parts`` one above the other in ``path`` (left-aligned on white); the parts are
    removed."""
    import matplotlib.pyplot as plt
    import numpy as np

    images = [plt.imread(part)[..., :3] for part in parts]
    width = max(image.shape[1] for image in images)
    padded = [np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=1.0) for image in images]
    plt.imsave(path, np.vstack(padded))
    for part in parts:
        part.unlink()
    return path


def readable_log_ticks(figure: Any) -> None:
    """Log axes get round ticks at least ``_TICK_PX`` apart, labelled plainly (``0.0012``): in a
    narrow panel (a slice plot's) matplotlib's labels of an axis up to a decade or two wide (its
    minor ticks, ``2x10^1 3x10^1 4x10^1``) ran into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for axes in figure.axes:
        box = axes.get_window_extent()
        for axis, scale, limits, length in ((axes.xaxis, axes.get_xscale(), axes.get_xlim(), box.width),
                                            (axes.yaxis, axes.get_yscale(), axes.get_ylim(), box.height)):
            low, high = sorted(limits)
            if scale != "log" or low <= 0:
                continue
            ticks = (_narrow_log_ticks if high < 10 * low else _wide_log_ticks)(low, high, length)
            if not ticks:
                continue
            digits = next((d for d in range(1, 7) if all(math.isclose(float(f"{v:.{d}g}"), v) for v in ticks)), 7)
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda value, _, digits=digits: _plain(value, digits)))
            axis.set_minor_formatter(NullFormatter())


def _plain(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, positional from 1e-4 to 1e6 (``30``, not ``3e+01``)."""
    rounded = float(f"{value:.{digits}g}")
    if abs(rounded) >= 1e6:
        return f"{rounded:.{digits}g}"
    text = repr(rounded)  # Python's shortest form: positional down to 1e-4
    return text.removesuffix(".0")


def _narrow_log_ticks(low: float, high: float, length: float) -> list[float]:
    """Under a decade: the roundest linear steps that leave two ticks or more, far enough apart."""
    from matplotlib.ticker import MaxNLocator

    ticks: list[float] = []
    for bins in range(2, 11):
        ticks = _thinned(MaxNLocator(nbins=bins).tick_values(low, high), low, high, length)
        if len(ticks) >= 2:
            break
    return ticks


def _wide_log_ticks(low: float, high: float, length: float) -> list[float]:
    """A decade or more: 1-2-5 in each decade, else 1-3, else every decade, else every few
    decades, the first of these whose ticks are all far enough apart; else 1-2-5 values thinned."""
    span = math.log(high / low)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    choices = [[float(f"{m}e{e}") for e in range(first, last + 1) for m in subs] for subs in ((1, 2, 5), (1, 3), (1,))]
    choices += [[float(f"1e{e}") for e in range(first, last + 1) if e % every == 0]
                for every in range(2, last - first + 1)]
    for ticks in choices:
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 2 and all(length * math.log(b / a) / span >= _TICK_PX for a, b in itertools.pairwise(ticks)):
            return ticks
    thinned = _thinned(choices[0], low, high, length)  # a decade or two in a narrow panel
    return thinned if len(thinned) >= 2 else []


def _thinned(values: Sequence[float], low: float, high: float, length: float) -> list[float]:
    """Those of ``values`` (ascending) within ``[low, high]``, each at least ``_TICK_PX`` beyond
    the last kept, on a log axis ``length`` pixels long."""
    span = math.log(high / low)
    kept: list[float] = []
    for value in values:
        if low <= value <= high and (not kept or length * math.log(value / kept[-1]) / span >= _TICK_PX):
            kept.append(float(value))
    return kept


_TICK_PX = 70
"""Room for a tick label such as ``0.0012`` and the space beside it, in pixels at 100 dpi."""


def _history(trials: list[TrialRecord], plan: Any) -> Any:
    import matplotlib.pyplot as plt

    space = plan.space
    sign = space.sign
    _, axes = plt.subplots(figsize=(7, 4.5), layout="constrained")
    stages = sorted({t.stage for t in trials})
    colors = plt.get_cmap("viridis")
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        for stage in stages:
            points = [(t.number, t.value) for t in trials if t.state is state and t.stage == stage
                      and t.value is not None and math.isfinite(t.value)]
            if not points:
                continue
            color = colors(stage / max(1, len(stages) - 1)) if len(stages) > 1 else "tab:blue"
            label = (f"stage {stage} " if len(stages) > 1 else "") + state.value
            axes.scatter(*zip(*points, strict=True), marker=MARKERS[state], color=color, label=label,
                         alpha=0.5 if state is TrialState.PRUNED else 0.9)
    best, steps = math.inf, []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state is TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            best = min(best, sign * t.value)
        if math.isfinite(best):
            steps.append((t.number, sign * best))
    if steps:
        axes.step(*zip(*steps, strict=True), where="post", color="tab:red", label="best so far")
    values = [t.value for t in trials if t.value is not None and math.isfinite(t.value)]
    if values and min(values) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")  # one diverging trial would flatten the others
    axes.set(xlabel="trial", ylabel=space.metric, title=f"{plan.study_name}: {plan.strategy_name}, "
             f"pruner {plan.pruner}")
    axes.legend(fontsize="small")
    return axes


def _points(trial: TrialRecord, first_step: int) -> list[tuple[int, float]]:
    """The trial's curve from ``first_step`` on, finite values only: what its line is drawn from."""
    return [(s, v) for s, v in trial.curve if s >= first_step and math.isfinite(v)]


def has_curves(trials: list[TrialRecord], first_step: int) -> bool:
    """Whether a trial reported its metric at two steps from ``first_step`` on: a curve to draw."""
    return any(len(_points(t, first_step)) >= 2 for t in trials)


def _curves(trials: list[TrialRecord], plan: Any, first_step: int, top: int = 5) -> Any:
    """The best trials' curves from ``first_step`` (1 where step 0 is the untrained model, which
    would set the scale), with every other trial faint behind them."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    space = plan.space
    best = [row.record for row in ranked(trials, space.direction)
            if row.record.state is TrialState.COMPLETE][:top]
    _, axes = plt.subplots(figsize=(7, 4.5), layout="constrained")
    others: dict[bool, list[list[tuple[int, float]]]] = {False: [], True: []}  # by whether pruned
    for t in trials:
        points = _points(t, first_step)
        if points and t not in best:
            others[t.state is TrialState.PRUNED].append(points)
    for pruned, lines in others.items():  # one artist each: a thousand lines draw as fast as ten
        if lines:
            axes.add_collection(LineCollection(lines, colors="lightgray", linewidths=0.8,
                                               linestyles=":" if pruned else "-"))
    axes.autoscale_view()
    for t in best:
        points = _points(t, first_step)
        if points:
            axes.plot(*zip(*points, strict=True), linewidth=1.6, label=f"trial {t.number}: {t.value:.4g}")
    which = f"the {len(best)} best trials" if len(best) > 1 else "the best trial"
    axes.set(xlabel="epoch", ylabel=space.metric, title=f"{which} (others in gray, pruned dotted)")
    if best:
        axes.legend(fontsize="small")
    return axes


# -- the page ---------------------------------------------------------------------------------
def _html(plan: Any, rows: list[RankedTrial], plots: dict[str, Path], test: Mapping[str, float]) -> str:
    space = plan.space
    counts = {state: sum(r.record.state is state for r in rows) for state in ENDED}
    best = next((r for r in rows if r.record.state is TrialState.COMPLETE), None)
    names = sorted({name for r in rows for name in r.record.params})
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(plan.study_name)}: hpo search report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        ".pruned{color:#777}.failed{color:#b00}img{max-width:100%}</style></head><body>",
        f"<h1>{e(plan.study_name)}</h1>",
        f"<p>Space <b>{e(space.name)}</b>, objective {e(plan.objective_name)}, strategy {e(plan.strategy_name)}, "
        f"pruner {e(plan.pruner)}, seed {plan.seed}; {space.direction} <b>{e(space.metric)}</b>. "
        + by_state(r.record for r in rows) + ".</p>",
    ]
    if best is not None:
        config = ", ".join(f"{k}={shown(v)}" for k, v in {**space.fixed, **best.record.params}.items())
        parts.append(f"<p><b>Best</b>: trial {best.record.number}, {e(space.metric)} {best.record.value:.4g}: "
                     f"<code>{e(config)}</code></p>")
    if test:
        parts.append("<p><b>Test</b> (evaluated once, best configuration): "
                     + ", ".join(f"{e(k)} {v:.4g}" for k, v in test.items()) + "</p>")
    for title, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    if counts[TrialState.COMPLETE] and CURVES not in plots:
        parts.append(f"<p>No learning curves: no trial reported {e(space.metric)} at two steps or more "
                     f"(<code>trial.report(epoch, {e(space.metric)}=...)</code> each epoch draws them, and lets "
                     "pruners stop poor trials early).</p>")
    if len(space.params) >= 2 and counts[TrialState.COMPLETE] < IMPORTANCE_MIN_TRIALS:
        parts.append(f"<p>Parameter importances are drawn from {IMPORTANCE_MIN_TRIALS} complete trials on "
                     f"({counts[TrialState.COMPLETE]} so far): with fewer they would rank noise.</p>")
    parts.append("<h2>Leaderboard</h2><p>Pruned trials rank by their best value before they were stopped.</p>")
    staged = any(r.record.stage for r in rows)  # a strategy without stages has no stage column
    header = ["#", "trial", "state", space.metric, *(["stage"] if staged else []), *names, "how it ended",
              "MLflow run"]
    parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        t = r.record
        value = "" if t.value is None else f"{t.value:.4g}"
        cells = [str(r.rank), str(t.number), t.state.value, value, *([str(t.stage)] if staged else []),
                 *(shown(t.params.get(n, "")) for n in names), how_it_ended(t, space.metric), r.run_id]
        parts.append(f"<tr class='{t.state.value}'>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
