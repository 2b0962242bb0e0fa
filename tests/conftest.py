from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow import MlflowClient

from hpo import SearchSpace, TrialPruned
from hpo.tracking._views import VIEW_TAG_PREFIX

ROOT = Path(__file__).resolve().parents[1]
# `make test` runs three pytest workers on two cores, each starting searches of its own: with
# torch's default of one thread per core, OpenMP threads spin-wait on cores another process
# needs (the population and objective tests took 164 s under three workers, 33 s so).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every Ray instance of the tests (the local one, the two-node cluster) stays on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make test``'s ``--dist loadgroup`` an ``xdist_group`` (the browser tests' one
    search, servers and browser) runs on one worker only where pytest-xdist could tag its tests:
    pytest 9.2 silently stopped that (pytest-xdist#1386), and each worker made them again."""
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
                item.fixturenames.insert(0, "ungrouped")  # type: ignore[attr-defined]


@pytest.fixture
def ungrouped() -> None:
    pytest.fail("pytest-xdist could not put this test's xdist_group on one worker: this pytest breaks "
                "--dist loadgroup (pytest-xdist#1386); install the range that pyproject.toml pins")


@pytest.fixture(autouse=True)
def users_modules_forgotten(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test's objective files put their folder on Python's path and their modules (``mine``,
    ``helper``) in ``sys.modules``, as in a user's process: gone after the test, so that the next
    test's ``mine`` is its own. Only folders of the tests' own (Ray adds its vendored packages)."""
    path, modules = sys.path[:], set(sys.modules)
    yield
    tests = str(tmp_path_factory.getbasetemp())
    added = tuple(os.path.join(folder, "") for folder in set(sys.path) - set(path) if folder.startswith(tests))
    sys.path[:] = [folder for folder in sys.path if not folder.startswith(tests)]
    for name in set(sys.modules) - modules:
        if added and (getattr(sys.modules[name], "__file__", None) or "").startswith(added):
            del sys.modules[name]


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST-1D is generated once per test session, not once per test."""
    path = tmp_path_factory.mktemp("data")
    os.environ["HPO_DATA_DIR"] = str(path)
    os.environ["HPO_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))  # the session's, not the user's
    return path


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One real MLflow SQLite store and one real Optuna SQLite storage for the session."""
    path = tmp_path_factory.mktemp("stores")
    return {"tracking_uri": f"sqlite:///{path / 'mlflow.db'}", "storage": f"sqlite:///{path / 'optuna.db'}"}


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback for the session (``make test`` installs it when
    missing); ``HPO_TEST_POSTGRES_URL`` points the tests at one already running instead."""
    if os.environ.get("HPO_TEST_POSTGRES_URL"):
        yield os.environ["HPO_TEST_POSTGRES_URL"]
        return
    initdb = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if initdb is None:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    bindir = Path(initdb).resolve().parent
    data = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run(_as_postgres([str(bindir / cmd[0]), *cmd[1:]]), check=True,  # noqa: E731
                                      capture_output=True, timeout=120)
    run("initdb", "-D", str(data / "db"), "-A", "trust", "-U", "postgres", "--no-sync")
    run("pg_ctl", "-D", str(data / "db"), "-l", str(data / "log"), "-w", "start", "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "hpo")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/hpo"
    finally:
        run("pg_ctl", "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name of the test's own for its experiments and studies, so that tests can share the
    session stores: apart from every other test's (searches without ``home`` write their reports
    into one folder), and the same in every run, whichever worker runs the test after which
    others (Hyperband draws a trial's bracket from its study's name)."""
    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]


def child_runs(tracking_uri: str, parent_run_id: str) -> list:
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=1000
    )


def left_behind(stores: dict[str, str], study_name: str, experiment: str) -> list[str]:
    """What a search of ``study_name`` left in the stores: its study, the runs MLflow shows in
    ``experiment``, its saved view."""
    left = [f"study {study_name}"] if study_name in optuna.get_all_study_names(stores["storage"]) else []
    client = MlflowClient(stores["tracking_uri"])
    if found := client.get_experiment_by_name(experiment):
        left += [f"run {run.info.run_name}" for run in client.search_runs([found.experiment_id])]
        left += [f"view {key}" for key in found.tags if key.startswith(VIEW_TAG_PREFIX)]
    return left


def digits_space(epochs: int = 3, **params: dict) -> SearchSpace:
    """A small space over the real digits objective, fast enough for end-to-end tests."""
    return SearchSpace.model_validate(
        {
            "name": "digits-test",
            "metric": "val_loss",
            "direction": "minimize",
            "objective": "digits_mlp",
            "params": params
            or {"lr": {"type": "float", "low": 1e-4, "high": 0.05, "log": True, "grid": [1e-3, 3e-3, 1e-2]}},
            "fixed": {"epochs": epochs, "batch_size": 128},
        }
    )


def short_lr_wd(folder: Path) -> Path:
    """The shipped ``lr_wd`` space with its 512-unit, 40-epoch training cut to 64 units and 2
    epochs, as ``folder/lr_wd.yaml``: for tests of what runs a search, not of what it finds."""
    shipped = (ROOT / "search_spaces" / "lr_wd.yaml").read_text()
    assert "epochs: 40" in shipped and "hidden: 512" in shipped
    path = folder / "lr_wd.yaml"
    path.write_text(shipped.replace("epochs: 40", "epochs: 2").replace("hidden: 512", "hidden: 64"))
    return path


def pruned_grid_search(home: Path, learning_rates: list[float], epochs: int):
    """A grid search on digits over ``learning_rates`` whose median rule, once three trials have
    reached an epoch past the first, prunes the slow ones early (one at a time, so the same every run)."""
    import hpo

    space = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True, "grid": learning_rates}}
    pruning = hpo.Pruning(pruner="median", warmup_trials=3, warmup_steps=1)
    return hpo.search("digits_mlp", digits_space(epochs=epochs, **space), strategy="grid",
                      n_trials=len(learning_rates), pruner=pruning, population=1, home=home)


@pytest.fixture
def fast_paths(monkeypatch) -> None:
    """For a test of hpo's own writes into Optuna's or MLflow's tables: on, whatever the run's
    ``HPO_FAST_PATHS`` (the whole suite also runs with them off)."""
    monkeypatch.setenv("HPO_FAST_PATHS", "1")


class WriteTransactions:
    """Counts the transactions that write to a database (reads commit too, and are not counted)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.count = 0
        self._writing = False
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._executed)
        sqlalchemy.event.listen(engine, "commit", self._committed)

    def _executed(self, conn, cursor, statement: str, *args) -> None:
        self._writing |= statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))

    def _committed(self, conn) -> None:
        self.count += self._writing
        self._writing = False


class StopAt:
    """A pruner's side for one trial (``Trial(pruning=...)``): notes what it is shown, and stops
    the trial once it reports ``step`` or later."""

    def __init__(self, step: int, reason: str = "median", detail: str = "") -> None:
        self.step, self.reason, self.detail = step, reason, detail
        self.seen: list[tuple[int, float]] = []

    def observe(self, step: int, value: float) -> None:
        self.seen.append((step, value))

    def decide(self, step: int) -> TrialPruned | None:
        return TrialPruned(self.reason, self.detail) if step >= self.step else None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(port: int, backend: Path, artifacts: Path) -> subprocess.Popen:
    """A real ``mlflow server`` over HTTP on loopback, once it answers."""
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{backend}", "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,  # its web server runs in processes of its own: stopped together
    )

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return True
        except OSError:
            assert server.poll() is None, "mlflow server exited"
            return False

    wait_for(up, what="the MLflow server")
    return server


def stop_server(server: subprocess.Popen) -> None:
    """The server down for real: its whole process group killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server for the module's tests: its URL."""
    path = tmp_path_factory.mktemp("server")
    port = free_port()
    server = start_mlflow_server(port, path / "server.db", path / "artifacts")
    yield f"http://127.0.0.1:{port}"
    stop_server(server)


def wait_for(condition: Callable[[], bool], timeout: float = 120.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.1)
