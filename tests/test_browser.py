"""In a real browser (headless Chromium): the link a search prints lands on its trials, ranked
best first, in MLflow's model-training view; the search run's description names the best trial;
the report's plots load. ``HPO_SCREENSHOTS=folder`` keeps the screenshots."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import pruned_grid_search
from hpo.reporting._terminal import runs_url

# One worker runs them all (``make test``'s ``--dist loadgroup``): the search, the servers and
# the browser below are made once, not once per worker (about 45 s each).
pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser")
    return pruned_grid_search(home, [3e-4, 1e-3, 1e-2, 3e-2, 0.1], epochs=5), home


def _serve(command: list[str], env: dict[str, str] | None = None):
    """Run a web server on a free loopback port (``{port}`` in ``command``); yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([part.format(port=port) for part in command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, f"{command[0]} did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:  # gunicorn's workers may outlast their master's SIGTERM
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def mlflow_ui(searched):
    """``mlflow ui`` on the search's store, as ``make ui`` runs it."""
    _, home = searched
    yield from _serve([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri",
                       f"sqlite:///{home / 'mlflow.db'}", "--default-artifact-root", str(home / "mlartifacts"),
                       "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
                      env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


@pytest.fixture(scope="module")
def dashboard(searched):
    """optuna-dashboard on the study storage, as ``make dashboard`` runs it."""
    _, home = searched
    yield from _serve([str(Path(sys.executable).with_name("optuna-dashboard")), f"sqlite:///{home / 'optuna.db'}",
                       "--host", "127.0.0.1", "--port", "{port}"])


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        yield browser.new_page(viewport={"width": 1500, "height": 900})
        browser.close()


def _shot(page, name: str, tmp_path: Path) -> Path:
    """A screenshot of the page, named in the assertion messages that follow it."""
    folder = Path(os.environ.get("HPO_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))
    return folder / f"{name}.png"


def test_the_printed_link_shows_the_searchs_trials_ranked_best_first(searched, mlflow_ui, page, tmp_path):
    result, _ = searched
    page.goto(runs_url(mlflow_ui, result))
    from playwright.sync_api import expect

    page.get_by_text(f"{len(result.trials)} matching runs").wait_for(timeout=90_000)
    expect(page.locator("a", has_text="trial-")).to_have_count(len(result.trials), timeout=30_000)
    names = page.locator("a", has_text="trial-").all_inner_texts()
    shot = _shot(page, "mlflow-runs", tmp_path)
    ranked = sorted((t for t in result.trials if t.value is not None), key=lambda t: t.value)
    assert [name.split()[0] for name in names] == [f"trial-{t.number:04d}" for t in ranked], shot
    assert any(" pruned at epoch " in name for name in names), (names, shot)
    assert page.get_by_text("Sort: ranking_val_loss").count(), shot


def test_a_trial_run_shows_its_learning_curve(searched, mlflow_ui, page, tmp_path):
    result, _ = searched
    run_id = next(t.run_id for t in result.trials if t.number == result.best.number)
    page.goto(f"{mlflow_ui}/#/experiments/{result.experiment_id}/runs/{run_id}/model-metrics"
              "?workflowType=machine_learning")
    page.get_by_placeholder("Search metric charts").fill("val_loss")
    page.get_by_text("val_loss", exact=True).first.wait_for(timeout=90_000)
    page.wait_for_timeout(2000)  # the charts draw after their data arrives
    shot = _shot(page, "mlflow-trial-curves", tmp_path)
    assert page.locator("canvas, svg.main-svg, .js-plotly-plot").count() >= 1, shot


def test_the_search_run_describes_the_search(searched, mlflow_ui, page, tmp_path):
    result, _ = searched
    page.goto(f"{mlflow_ui}/#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
              "?workflowType=machine_learning")
    page.get_by_text(f"Best: trial {result.best.number}").wait_for(timeout=90_000)
    shot = _shot(page, "mlflow-search-run", tmp_path)
    assert page.get_by_text("Test (evaluated once, best configuration)").count(), shot
    page.goto(f"{mlflow_ui}/#/experiments/{result.experiment_id}/runs/{result.parent_run_id}/artifacts"
              "?workflowType=machine_learning")
    page.get_by_text("leaderboard.csv").wait_for(timeout=90_000)
    shot = _shot(page, "mlflow-search-artifacts", tmp_path)
    assert page.get_by_text("report", exact=True).count() and page.get_by_text("best_config.json").count(), shot


def test_optuna_dashboard_shows_the_study_with_its_metric(searched, dashboard, page, tmp_path):
    result, _ = searched
    page.goto(dashboard)
    page.get_by_text(result.study_name).first.wait_for(timeout=90_000)
    page.get_by_text(result.study_name).first.click()
    page.get_by_text("val_loss").first.wait_for(timeout=90_000)
    shot = _shot(page, "optuna-dashboard", tmp_path)
    assert page.get_by_text("val_loss").count(), shot


def test_the_report_is_one_page_whose_plots_load(searched, page, tmp_path):
    result, _ = searched
    page.goto(result.report.resolve().as_uri())
    images = page.locator("img")
    assert images.count() >= 3  # history, learning curves, metric against the parameter
    widths = images.evaluate_all("images => images.map(image => image.naturalWidth)")
    assert all(width > 300 for width in widths), widths
    assert page.locator("tr.pruned").count() >= 1
    page.set_viewport_size({"width": 1200, "height": 2400})
    _shot(page, "report", tmp_path)


def test_the_printed_link_opens_the_comparison_with_no_click(searched, mlflow_ui, page, tmp_path):
    """The saved view the search wrote: the parameter, ranking and state columns in the table;
    parallel coordinates, the metric against the parameter and the best curves as charts."""
    result, _ = searched
    from playwright.sync_api import expect

    page.goto(runs_url(mlflow_ui, result))
    page.get_by_text(f"{len(result.trials)} matching runs").wait_for(timeout=90_000)
    header = page.get_by_role("columnheader")
    expect(header.get_by_text("lr", exact=True)).to_be_visible(timeout=30_000)
    shot = _shot(page, "mlflow-comparison-table", tmp_path)
    texts = header.all_inner_texts()
    assert {"ranking_val_loss", "lr", "hpo.state"} <= {text.strip() for text in texts}, (texts, shot)
    page.goto(runs_url(mlflow_ui, result) + "&compareRunsMode=CHART")
    page.get_by_text("Showing all runs").wait_for(timeout=90_000)  # parallel coordinates over every trial
    page.get_by_text("Step", exact=True).wait_for(timeout=30_000)  # the axis of the best trials' curves
    page.wait_for_timeout(2000)  # the charts draw after their data arrives
    shot = _shot(page, "mlflow-comparison-charts", tmp_path)
    assert page.get_by_text("log10_lr", exact=True).count() >= 2, shot  # an axis of both, on lr's log scale


def test_a_resumed_search_refreshes_its_view_instead_of_adding_one(searched):
    import json

    from mlflow import MlflowClient

    from hpo.tracking._views import VIEW_TAG_PREFIX

    result, home = searched
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    views = lambda: {k: json.loads(v) for k, v in client.get_experiment(result.experiment_id).tags.items()  # noqa: E731
                     if k.startswith(VIEW_TAG_PREFIX)}
    before = views()
    assert list(before) == [VIEW_TAG_PREFIX + result.view_key]
    again = pruned_grid_search(home, [3e-4, 1e-3, 1e-2, 3e-2, 0.1], epochs=5)  # resumes: nothing left to run
    after = views()
    assert list(after) == list(before) and again.view_key == result.view_key
    (view,) = after.values()
    assert view["createdAt"] == next(iter(before.values()))["createdAt"] and view["updatedAt"] > view["createdAt"]
