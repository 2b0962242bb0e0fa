"""A search's saved view in the MLflow UI: its trials, ranked, with the parameter columns and the
comparison charts chosen, so that the link a search prints opens the comparison with no click.

MLflow 3.17 keeps saved views as experiment tags, ``mlflow.sharedViewState.<key>``, holding an
envelope ``{name, createdAt, updatedAt, state}`` whose ``state`` is the JSON of the runs page:
its search facets (filter, sort) and its UI state (columns, chart cards and sections). The UI
opens one with ``?viewStateShareKey=<key>`` and lists it among the experiment's saved views.
The data is made first (``view_state``), written second (``write_view``).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpo.plan import SearchPlan

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
BEST_CURVES = 5
"""How many of the best trials' validation curves the line chart draws."""


def view_key(study_name: str) -> str:
    """The view's key: the study's name, in the characters a tag key may hold."""
    return "hpo-" + re.sub(r"[^\w.\- ]", "-", study_name)


def log_axis_metric(name: str) -> str:
    """The metric a trial run carries for a log-scaled parameter, for charts on its own scale
    (MLflow's scatter and parallel-coordinates charts have no log axis)."""
    return f"log10_{name}"


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def _card(kind: str, section: str, title: str, **fields: Any) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "type": kind, "metricSectionId": section, "deleted": False,
            "isGenerated": False, "displayName": title, **fields}


def _axis(plan: SearchPlan, name: str) -> dict[str, str]:
    if plan.space.params[name].log:
        return {"key": log_axis_metric(name), "type": "METRIC"}
    return {"key": name, "type": "PARAM"}


def view_state(plan: SearchPlan, parent_run_id: str, ranking: str) -> dict[str, Any]:
    """The runs page of the search: its trials best first by ``ranking``, the searched parameters,
    the ranking metric and the state as columns; parallel coordinates of the parameters against
    the metric, the metric against each parameter (on its log scale where it has one), and the
    best trials' validation curves."""
    section = str(uuid.uuid4())
    names = list(plan.space.params)
    numeric = [n for n in names if plan.space.params[n].type != "categorical"]
    logged = [n for n in numeric if plan.space.params[n].log]
    cards = [_card("PARALLEL", section, f"{ranking} against the parameters",
                   selectedParams=[n for n in numeric if n not in logged],
                   selectedMetrics=[*map(log_axis_metric, logged), ranking], showAllRuns=True, runsCountToCompare=1000)]
    cards += [_card("SCATTER", section, f"{ranking} against {name}" + (" (log10)" if name in logged else ""),
                    xaxis=_axis(plan, name), yaxis={"key": ranking, "type": "METRIC"}, runsCountToCompare=1000)
              for name in numeric]
    cards.append(_card("LINE", section, f"{plan.space.metric} of the {BEST_CURVES} best trials",
                       metricKey=plan.space.metric, selectedMetricKeys=[plan.space.metric],
                       runsCountToCompare=BEST_CURVES, lineSmoothness=0, xAxisKey="step", xAxisScaleType="linear",
                       scaleType="linear", useGlobalXaxisKey=False, useGlobalLineSmoothing=False,
                       range={}, yAxisKey="metric", yAxisExpressions=[], ignoreOutliers=False,
                       selectedXAxisMetricKey=""))
    return {
        "searchFilter": f"tags.`hpo.study_run` = '{parent_run_id}'",
        "orderByKey": _column("metrics", ranking),
        "orderByAsc": plan.space.direction == "minimize",
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [*(_column("params", n) for n in names), _column("metrics", ranking),
                            _column("tags", "hpo.state")],
        "compareRunCharts": cards,
        "compareRunSections": [{"uuid": section, "name": plan.study_name, "display": True, "isReordered": False,
                                "deleted": False, "isGenerated": False}],
        "runsHiddenMode": "SHOW_ALL",
        "hideEmptyCharts": False,
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "chartsSearchFilter": "",
    }


def write_view(client: MlflowClient, experiment_id: str, plan: SearchPlan, parent_run_id: str,
               ranking: str) -> str:
    """Write (or refresh, keeping its creation time) the search's saved view; returns its key."""
    key = view_key(plan.study_name)
    now = int(time.time() * 1000)
    created = now
    existing = client.get_experiment(experiment_id).tags.get(VIEW_TAG_PREFIX + key)
    if existing:
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a view made by hand: made anew
            created = int(json.loads(existing)["createdAt"])
    envelope = {"name": f"hpo: {plan.study_name}", "createdAt": created, "updatedAt": now,
                "state": json.dumps(view_state(plan, parent_run_id, ranking))}
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))
    return key


def delete_view(client: MlflowClient, experiment_id: str, key: str) -> None:
    """Remove the saved view of ``key`` (``write_view``'s), if the experiment has it."""
    if VIEW_TAG_PREFIX + key in client.get_experiment(experiment_id).tags:
        client.delete_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key)
