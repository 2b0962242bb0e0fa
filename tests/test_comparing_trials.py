"""Comparing trials: every child run ranks and plots honestly, the search run tells the story, the
report is written from the study alone, and the printed link lands on the search's trials."""

from __future__ import annotations

import csv
import io
import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

import hpo
from conftest import ROOT, child_runs, digits_space, pruned_grid_search
from hpo.reporting._terminal import mlflow_pointer


@pytest.fixture(scope="module")
def pruned_search(tmp_path_factory):
    home = tmp_path_factory.mktemp("comparing")
    return pruned_grid_search(home, [3e-4, 1e-3, 3e-2, 0.1, 0.3], epochs=6), home


def test_every_trial_carries_the_ranking_metric_and_says_how_it_ended(pruned_search):
    result, _ = pruned_search
    client = MlflowClient(result.tracking_uri)
    runs = {int(r.data.tags["hpo.trial_number"]): r for r in child_runs(result.tracking_uri, result.parent_run_id)}
    assert any(t.reason == "median" for t in result.trials), "the median rule pruned nothing: nothing to prove"
    for trial in result.trials:
        run = runs[trial.number]
        curve = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert run.data.metrics["ranking_val_loss"] == pytest.approx(min(curve))  # best so far, also when pruned
        assert all(m.step > 0 for m in client.get_metric_history(run.info.run_id, "val_loss"))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "initial_val_loss")] == [0]
        note = run.data.tags["mlflow.note.content"]
        if trial.state is hpo.TrialState.PRUNED:
            assert "final_val_loss" not in run.data.metrics
            assert run.info.run_name.startswith(f"trial-{trial.number:04d} pruned at epoch {len(curve)}")
            if trial.reason == "median":
                assert note.startswith(f"pruned by median at epoch {len(curve)}: ") and "> median" in note
            else:
                assert note.startswith(f"diverged at epoch {len(curve)}: ") and "val_loss" in note
        else:
            assert run.info.run_name == f"trial-{trial.number:04d} val_loss={trial.value:.4g}"
            assert note.startswith("complete: val_loss")


def test_the_search_run_names_its_best_run_and_ranks_every_trial(pruned_search):
    result, home = pruned_search
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    runs = {int(r.data.tags["hpo.trial_number"]): r.info.run_id
            for r in child_runs(result.tracking_uri, result.parent_run_id)}
    best_run = runs[result.best.number]
    assert parent.data.tags["hpo.best_run_id"] == best_run
    assert f"runs/{best_run}?workflowType=machine_learning)" in parent.data.tags["mlflow.note.content"]
    board = list(csv.DictReader(io.StringIO(Path(client.download_artifacts(
        result.parent_run_id, "leaderboard.csv", str(home))).read_text())))
    assert [int(row["trial"]) for row in board] == [t.number for t in sorted(result.trials, key=lambda t: t.value)]
    assert {int(row["trial"]): row["run_id"] for row in board} == runs
    assert {row["state"] for row in board} == {"complete", "pruned"}
    shipped = {f.path for f in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/report.html", "report/history.png", "report/curves.png", "report/slice.png"} <= shipped
    assert not [path for path in shipped if path.startswith("report/.")]  # the digest of what it was drawn from


def test_hpo_report_writes_the_report_from_the_study_alone(pruned_search, tmp_path):
    result, home = pruned_search
    storage = f"sqlite:///{home / 'optuna.db'}"
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "hpo.cli", "report", result.study_name, "--storage", storage,
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # self-contained
    for trial in result.trials:
        assert f"<td>{trial.state.value}</td>" in page
    for name in ("page.html", "page.html"):  # a file named .html is the page alone, written again where it is
        alone = subprocess.run([sys.executable, "-m", "hpo.cli", "report", result.study_name, "--storage", storage,
                                "--out", str(tmp_path / "pages" / name)], capture_output=True, text=True, timeout=120)
        assert alone.returncode == 0, alone.stderr
    assert (tmp_path / "pages" / "page.html").read_text().count("data:image/png;base64,") >= 3
    assert os.listdir(tmp_path / "pages") == ["page.html"]  # its plots inside it, none beside it
    wrong = subprocess.run([sys.executable, "-m", "hpo.cli", "report", result.study_name[:-1], "--storage", storage],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and f"did you mean {result.study_name!r}" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    (tmp_path / "a-file").write_text("")  # a folder that cannot be made: Python's traceback before
    unwritable = subprocess.run([sys.executable, "-m", "hpo.cli", "report", result.study_name, "--storage", storage,
                                 "--out", str(tmp_path / "a-file" / "report")], capture_output=True, text=True,
                                timeout=120)
    assert unwritable.returncode == 2
    assert unwritable.stderr.strip().splitlines() == [
        f"hpo: error: --out: cannot make the folder {str(tmp_path / 'a-file' / 'report')!r}: Not a directory"]


def test_the_printed_link_lands_on_the_search_where_its_store_is_served(pruned_search, tmp_path, monkeypatch):
    result, home = pruned_search
    ranked = "orderByKey=metrics.%60ranking_val_loss%60&orderByAsc=true"
    filtered = f"searchFilter=tags.%60hpo.study_run%60%20%3D%20%27{result.parent_run_id}%27"
    monkeypatch.setenv("HPO_UI_URL", "http://0.0.0.0:5123")
    project = home.parent if home.name == ".hpo" else _as_project(home, tmp_path)
    shutil.copy(ROOT / "Makefile", project / "Makefile")  # the repository's, whose `make ui` serves .hpo
    served = mlflow_pointer(result, cwd=project)
    assert result.view_key  # the search's saved view: its filter, ranking, columns and charts
    assert (f"http://0.0.0.0:5123/#/experiments/{result.experiment_id}/runs?viewStateShareKey={result.view_key}"
            "&workflowType=machine_learning") in served
    assert "searchFilter" not in served  # a filter in the link would keep MLflow from opening the view
    without_view = mlflow_pointer(_with_view_key(result, ""), cwd=project)
    assert f"http://0.0.0.0:5123/#/experiments/{result.experiment_id}/runs?workflowType=machine_learning" in without_view
    assert ranked in without_view and filtered in without_view
    elsewhere = mlflow_pointer(result, cwd=tmp_path)
    assert f"mlflow ui --backend-store-uri {result.tracking_uri}" in elsewhere and "5123" not in elsewhere
    (project / "Makefile").unlink()  # the user's own folder: the search's store is there, `make ui` is not
    own_folder = mlflow_pointer(result, cwd=project)
    assert "make ui" not in own_folder and f"mlflow ui --backend-store-uri {result.tracking_uri}" in own_folder
    server = mlflow_pointer(_with_uri(result, "http://tracking.example:5000"))
    assert f"http://tracking.example:5000/#/experiments/{result.experiment_id}/runs?" in server


def _as_project(home: Path, tmp_path: Path) -> Path:
    """A project folder whose .hpo/mlflow.db is the search's store (as `make ui` serves it)."""
    project = tmp_path / "project"
    (project / ".hpo").mkdir(parents=True)
    (project / ".hpo" / "mlflow.db").symlink_to(home / "mlflow.db")
    return project


def _with_view_key(result, key: str):
    import dataclasses

    return dataclasses.replace(result, view_key=key)


def _with_uri(result, uri: str):
    import dataclasses

    return dataclasses.replace(result, tracking_uri=uri)


TWO_PARAMS = hpo.SearchSpace.model_validate({
    "name": "two", "metric": "loss", "direction": "minimize",
    "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
               "momentum": {"type": "float", "low": 0.5, "high": 0.99}}})


def two_params_report(n_trials: int, stores: dict[str, str], unique: str, home: Path) -> Path:
    """The report of a random search of ``TWO_PARAMS`` on two simulated workers, ``n_trials`` in all."""
    from hpo.drivers.simulated import SimulatedOptions

    return hpo.search(lambda params, trial: params["lr"] * params["momentum"], TWO_PARAMS, strategy="random",
                      n_trials=n_trials, driver=SimulatedOptions(workers=2), study_name=unique, experiment=unique,
                      evaluate_test=False, quiet=True, home=home, **stores).report


def test_importances_are_drawn_once_the_best_tenth_holds_two_trials(stores, unique, tmp_path):
    """PED-ANOVA from one best trial would rank noise: the report says so until there are enough."""
    from hpo.reporting import IMPORTANCE_MIN_TRIALS

    def search(n_trials: int) -> Path:
        return two_params_report(n_trials, stores, unique, tmp_path)

    few = search(IMPORTANCE_MIN_TRIALS - 1)
    assert (few.parent / "parallel.png").exists() and not (few.parent / "importances.png").exists()
    assert (f"Parameter importances are drawn from {IMPORTANCE_MIN_TRIALS} complete trials on "
            f"({IMPORTANCE_MIN_TRIALS - 1} so far)") in few.read_text()
    enough = search(IMPORTANCE_MIN_TRIALS)  # the same study, one trial more
    assert (enough.parent / "importances.png").exists()
    assert "Parameter importances (PED-ANOVA)" in enough.read_text() and "so far)" not in enough.read_text()


def test_a_rerun_with_nothing_new_keeps_the_report_and_anything_new_draws_it_again(stores, unique, tmp_path):
    """Drawing is most of a rerun of a finished search (1.5 of 4 s): it draws again only where
    the study has changed or a file of the report is gone."""

    def search(n_trials: int) -> Path:
        return two_params_report(n_trials, stores, unique, tmp_path)

    def drawn(page: Path) -> dict[str, int]:
        return {path.name: path.stat().st_mtime_ns for path in page.parent.iterdir()}

    first = search(4)
    before = drawn(first)
    assert {"report.html", "history.png", "parallel.png", "leaderboard.csv"} <= set(before)
    assert drawn(search(4)) == before  # nothing new: kept as it was
    (first.parent / "parallel.png").unlink()
    assert drawn(search(4)).keys() == before.keys()  # a file gone: drawn again
    assert drawn(search(5))["report.html"] != before["report.html"]  # a trial more
    assert "<td>4</td>" in first.read_text()
    hpo.report(unique, stores["storage"], first.parent)  # the same again from the study alone: kept
    assert "<td>4</td>" in first.read_text()


def test_a_search_without_its_report_draws_nothing_and_says_how_to_draw_it(stores, unique, tmp_path):
    result = hpo.search(lambda params, trial: params["lr"], digits_space(epochs=1), strategy="grid", n_trials=2,
                        study_name=unique, experiment=unique, evaluate_test=False, quiet=True, home=tmp_path,
                        report=False, **stores)
    assert result.report is None and not (tmp_path / "reports").exists()
    client = MlflowClient(stores["tracking_uri"])
    assert [a.path for a in client.list_artifacts(result.parent_run_id)] == ["best_config.json", "space.json"]
    note = client.get_run(result.parent_run_id).data.tags["mlflow.note.content"]
    assert note.endswith(f"every trial ranked, with plots: `hpo report {unique}`.")
    assert hpo.report(unique, stores["storage"], str(tmp_path / "later")).name == "report.html"  # a str as a Path
    assert hpo.report(unique, stores["storage"], str(tmp_path / "page.html")).is_file()
    with pytest.raises(hpo.HpoError, match=f"no study in sqlite:///{tmp_path}/optuna.db: run a search first"):
        hpo.studies(home=str(tmp_path))  # a str for the home, as search takes it


def test_a_report_of_many_parameters_draws_their_slices_in_rows_the_page_shows_at_full_size(stores, unique, tmp_path):
    """Optuna draws a slice plot's panels in one row: six parameters made an image 1920 pixels
    wide, shrunk on the page to half size, its labels with it. And a strategy without stages has
    no stage column."""
    import matplotlib.pyplot as plt

    from hpo.drivers.simulated import SimulatedOptions

    names = ["lr", "weight_decay", "dropout", "momentum", "batch_size"]
    space = hpo.SearchSpace.model_validate({
        "name": "five", "metric": "loss", "direction": "minimize",
        "params": {name: {"type": "float", "low": 1e-4, "high": 0.5, "log": True} for name in names}})
    report = hpo.search(lambda params, trial: sum(params.values()), space, strategy="random", n_trials=6,
                        driver=SimulatedOptions(workers=2), study_name=unique, experiment=unique,
                        evaluate_test=False, quiet=True, home=tmp_path, **stores).report
    height, width, _ = plt.imread(report.parent / "slice.png").shape
    assert width <= 1080 and height >= 2 * 300, (width, height)  # two rows of panels, at most the page's width
    assert not list(report.parent.glob("slice-*.png"))
    page = report.read_text()
    assert "<th>stage</th>" not in page and "<th>dropout</th>" in page


def test_learning_curves_are_drawn_from_the_steps_an_objective_reports_and_not_without_them(stores, unique, tmp_path):
    """An objective that only returns its value has no curves: the page says so instead of an
    empty plot. One that reports steps from 0 has its step 0 drawn, unless it says that step is
    the untrained model (as the built-in objectives do)."""
    from hpo.drivers.simulated import SimulatedOptions

    space = hpo.SearchSpace.model_validate({"name": "one", "metric": "loss", "direction": "minimize",
                                            "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}})

    def returns_only(params, trial):
        return params["lr"]

    def reports(params, trial):
        for step in range(3):
            trial.report(step, loss=params["lr"] * (3 - step))
        return params["lr"]

    def search(objective, name: str) -> Path:
        return hpo.search(objective, space, strategy="random", n_trials=3, driver=SimulatedOptions(workers=1),
                          study_name=f"{unique}-{name}", experiment=unique, evaluate_test=False, quiet=True,
                          home=tmp_path, **stores).report

    bare = search(returns_only, "bare")
    assert not (bare.parent / "curves.png").exists() and (bare.parent / "history.png").exists()
    assert "No learning curves: no trial reported loss at two steps or more" in bare.read_text()

    from hpo.reporting import _curves, has_curves
    from hpo.store import TrialStore

    curved = search(reports, "curved")
    assert (curved.parent / "curves.png").exists() and "No learning curves" not in curved.read_text()
    store = TrialStore(stores["storage"], f"{unique}-curved")
    trials = store.trials()
    assert has_curves(trials, first_step=0)
    axes = _curves(trials, hpo.plan.SearchPlan.from_json(store.saved()[0]), first_step=0)
    assert sorted({x for line in axes.get_lines() for x in line.get_xdata()}) == [0, 1, 2]  # step 0 drawn


def readable(axes) -> list[str]:
    """The x tick labels ``axes`` shows, checked: at least two, none over another, each where its
    value lies."""
    axes.get_figure().canvas.draw()
    low, high = axes.get_xlim()
    labels = [label for minor in (False, True) for label in axes.xaxis.get_ticklabels(minor=minor)
              if label.get_visible() and label.get_text() and low <= label.get_position()[0] <= high]
    boxes = sorted((label.get_window_extent() for label in labels), key=lambda box: box.x0)
    texts = [label.get_text() for label in labels]
    assert len(boxes) >= 2, texts
    assert all(left.x1 < right.x0 for left, right in itertools.pairwise(boxes)), texts
    for label in labels:
        assert float(label.get_text()) == pytest.approx(label.get_position()[0]), texts
    return texts


@pytest.mark.parametrize(("low", "high"), [(1e-3, 1.6e-3), (1.02e-3, 1.45e-3), (2e-5, 6e-5), (1e-3, 1.05e-3),
                                           (0.3, 2.9), (1e-4, 9e-4), (14, 150), (4e-3, 7e-2), (1e-6, 1e-2),
                                           (2e-7, 3e-1)])
def test_log_axes_keep_their_tick_labels_apart(low, high):
    """A panel as narrow as a slice plot's, on a log axis: matplotlib labels its minor ticks up to
    a decade or two wide, and a learning rate between 1e-3 and 1.6e-3 got six labels run into one
    another, a batch size between 14 and 150 five."""
    import matplotlib.pyplot as plt

    from hpo.reporting import readable_log_ticks

    figure = plt.figure(figsize=(1.75, 3), dpi=100)
    axes = figure.add_axes((0, 0.2, 1, 0.7))
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    readable_log_ticks(figure)
    assert not any("e+" in text for text in readable(axes))  # a batch size of 30 reads 30, not 3e+01
    plt.close(figure)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_slice_plot_of_a_narrow_log_range_is_readable():
    import optuna
    import optuna.visualization.matplotlib as optuna_plots

    from hpo.reporting import readable_log_ticks

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-3, 1.6e-3, log=True)
                   + trial.suggest_float("wd", 2e-5, 6e-5, log=True) + trial.suggest_float("dropout", 0.0, 0.5),
                   n_trials=8)
    figure = optuna_plots.plot_slice(study).flat[0].get_figure()
    readable_log_ticks(figure)
    log_axes = [axes for axes in figure.axes if axes.get_xscale() == "log"]
    assert len(log_axes) == 2
    for axes in log_axes:
        readable(axes)


@pytest.mark.parametrize(("target", "variable"), [("ui", "PORT"), ("dashboard", "DASHBOARD_PORT")])
def test_a_ui_whose_port_is_taken_says_so_in_one_line(target, variable):
    """Before, `mlflow ui` logged the error among its INFO lines and make exited 0."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(["make", "-s", "-o", ".venv/.installed", target, f"{variable}={port}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (f"make {target}: 127.0.0.1:{port} is taken (is the UI already running "
                                           f"there?); name another port: {variable}=...")
