"""What survives what: real processes, real signals, a real MLflow server stopped and started
again, stores made unusable. After each fault the study and MLflow agree and a rerun finishes."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

import hpo
import hpo.files
import hpo.tracking._writer
from conftest import child_runs, free_port, start_mlflow_server, stop_server, wait_for
from hpo.store import to_record

SPACE = """
metric: val_loss
direction: minimize
params:
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true, grid: [0.0001, 0.001, 0.01, 0.1]}
"""

SLOW = """
import os, pathlib, time

def objective(params, trial):
    pathlib.Path(f"started-{trial.number}-{os.getpid()}").touch()
    time.sleep(float(os.environ.get("HPO_TEST_SLEEP", "60")))
    return params["lr"]
"""

HPO = str(Path(sys.executable).with_name("hpo"))


def folder_with(tmp_path: Path, objective: str = SLOW, space: str = SPACE) -> Path:
    (tmp_path / "space.yaml").write_text(space)
    (tmp_path / "mine.py").write_text(textwrap.dedent(objective))
    return tmp_path


def stores_of(folder: Path) -> tuple[str, str]:
    return f"sqlite:///{folder / '.hpo' / 'optuna.db'}", f"sqlite:///{folder / '.hpo' / 'mlflow.db'}"


def parent_run(tracking_uri: str, experiment: str = "space"):
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                   "tags.`hpo.role` = 'search'")
    return parent


@pytest.mark.parametrize("fresh", [False, True], ids=["resumed", "new-study"])
def test_sigterm_closes_the_running_trial_as_interrupted_and_exits_143(fresh, tmp_path):
    """With ``--new-study`` the same command starts yet another study: the line named it before."""
    folder = folder_with(tmp_path)
    command = [HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--trials", "4"]
    search = subprocess.Popen([*command, *(["--new-study"] if fresh else [])], cwd=folder, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list(folder.glob("started-*")), what="a trial to start")
    search.send_signal(signal.SIGTERM)  # kill, timeout, Docker, Slurm
    _, stderr = search.communicate(timeout=120)
    assert search.returncode == 143
    name = "space-objective-coarse-to-fine-seed0"
    again = f"run it again with --study {name} in place of --new-study" if fresh else "run the same command again"
    assert stderr.strip().splitlines()[-1] == f"hpo: terminated; its running trials are closed as interrupted: {again} " \
                                              "to resume"
    storage, tracking_uri = stores_of(folder)
    (trial,) = optuna.load_study(study_name=name, storage=storage).trials
    assert (trial.state.name, to_record(trial).reason) == ("FAIL", "interrupted")
    parent = parent_run(tracking_uri)
    (run,) = child_runs(tracking_uri, parent.info.run_id)
    assert (run.info.status, run.data.tags["hpo.reason"]) == ("FAILED", "interrupted")
    assert parent.info.status == "KILLED"
    if fresh:  # as the line says, it resumes that study
        resumed = subprocess.run([*command, "--study", name], cwd=folder, capture_output=True, text=True, timeout=120,
                                 env=os.environ | {"HPO_TEST_SLEEP": "0"})
        assert resumed.returncode == 0, resumed.stderr
        assert f"1 trial interrupted or lost in an earlier run of study {name!r} runs again" in resumed.stderr
        assert f"{name}: 4 trials (4 complete, 0 pruned, 0 failed)" in resumed.stdout


def test_sigterm_stops_hpo_worker_as_it_stops_a_search(tmp_path):
    """A worker stopped by SIGTERM (a scheduler ending its job) died at once, and its trial stayed
    running until its silence told: it is closed as interrupted, as a search's is."""
    folder = folder_with(tmp_path)
    storage, _ = stores_of(folder)
    search = subprocess.Popen([HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid",
                               "--trials", "4", "--workers", "1", "--population", "1"],
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(folder.glob("started-*")), what="the search's first trial")
        worker = subprocess.Popen([HPO, "worker", "--study", "space-objective-grid-seed0", "--storage", storage,
                                   "--workers", "1", "--population", "1"],
                                  cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(list(folder.glob("started-*"))) == 2, what="the worker's trial")
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 143, stderr
        assert stderr.strip().splitlines()[-1] == ("hpo: terminated; its running trials are closed as interrupted: "
                                                   "run the same command again to resume")
        trials = optuna.load_study(study_name="space-objective-grid-seed0", storage=storage).trials
        states = sorted((t.state.name, to_record(t).reason) for t in trials)
        assert states == [("FAIL", "interrupted"), ("RUNNING", "")], states  # the search's trial runs on
    finally:
        search.send_signal(signal.SIGTERM)
        search.communicate(timeout=120)


def raises_its_own(params, trial):
    if params["lr"] == 0.1:
        raise KeyboardInterrupt  # the objective's own, not the user's Ctrl-C
    if params["lr"] == 0.01:
        sys.exit(3)
    return params["lr"]


def test_an_objectives_own_keyboard_interrupt_or_exit_fails_only_its_trial(tmp_path, stores, unique):
    space = hpo.load_space(folder_with(tmp_path) / "space.yaml")
    result = hpo.search(raises_its_own, space, strategy="grid", report=False, n_trials=4, study_name=unique, experiment=unique,
                        evaluate_test=False, **stores)
    outcomes = sorted((t.params["lr"], t.state.value, t.reason) for t in result.trials)
    assert outcomes == [(0.0001, "complete", ""), (0.001, "complete", ""), (0.01, "failed", "SystemExit: 3"),
                        (0.1, "failed", "KeyboardInterrupt")]


def hangs_on_the_largest_rate(params, trial):
    if params["lr"] == 0.1:
        time.sleep(120)  # hung (a deadlock, a stuck data loader)
    return params["lr"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_trial_over_its_time_limit_fails_as_timeout_and_the_search_goes_on(tmp_path, stores, unique, workers):
    space = hpo.load_space(folder_with(tmp_path) / "space.yaml")
    started = time.monotonic()
    result = hpo.search(hangs_on_the_largest_rate, space, strategy="grid", report=False, n_trials=4, trial_timeout=2,
                        driver=hpo.OptunaOptions(workers=workers), study_name=unique, experiment=unique,
                        evaluate_test=False, **stores)
    assert time.monotonic() - started < 60
    outcomes = sorted((t.params["lr"], t.state.value, t.reason) for t in result.trials)
    assert outcomes == [(0.0001, "complete", ""), (0.001, "complete", ""), (0.01, "complete", ""),
                        (0.1, "failed", "timeout")]


HUNG_IN_C = """
import ctypes

def objective(params, trial):
    if params["lr"] == 0.1:
        ctypes.CDLL(None).sleep(120)  # hung inside C code: no Python runs to be interrupted
    return params["lr"]
"""


def test_a_worker_hung_in_c_code_past_the_time_limit_is_replaced(tmp_path):
    folder = folder_with(tmp_path, HUNG_IN_C)
    done = subprocess.run([HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid",
                           "--trials", "4", "--workers", "2", "--trial-timeout", "2"], cwd=folder,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    storage, _ = stores_of(folder)
    trials = optuna.load_study(study_name="space-objective-grid-seed0", storage=storage).trials
    outcomes = sorted((t.params["lr"], to_record(t).state.value, to_record(t).reason) for t in trials)
    assert outcomes == [(0.0001, "complete", ""), (0.001, "complete", ""), (0.01, "complete", ""),
                        (0.1, "failed", "timeout")]


def test_workers_die_with_their_search(tmp_path):
    folder = folder_with(tmp_path)
    search = subprocess.Popen([HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--trials", "4",
                               "--workers", "2"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(list(folder.glob("started-*"))) == 2, what="both workers to start a trial")
    workers = [int(path.name.split("-")[2]) for path in folder.glob("started-*")]
    search.kill()  # SIGKILL, an OOM kill: the parent cannot tell its workers anything
    search.wait()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(lambda: all(gone(pid) for pid in workers), timeout=30, what="the workers to exit")
    time.sleep(1)
    assert len(list(folder.glob("started-*"))) == 2  # and they claimed nothing more


def test_the_first_run_makes_its_stores_whole_even_when_killed_or_run_twice_at_once(tmp_path):
    quick = "def objective(params, trial):\n    return params['lr']\n"
    folder = folder_with(tmp_path, quick)
    args = [HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid", "--trials", "4",
            "--no-report"]  # ten searches; their reports are not what this is about
    # Killed while the first run creates its stores: the folder appears after the imports (4-8 s),
    # MLflow's store some 20 ms later, the study's within half a second (timed on this machine).
    for delay in (0.02, 0.15, 0.4, 0.8):
        shutil.rmtree(folder / ".hpo", ignore_errors=True)
        first = subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: (folder / ".hpo").exists(), what="the first run's .hpo folder")
        time.sleep(delay)
        first.kill()
        first.wait()
        again = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, (delay, again.stderr)
        assert "4 trials (4 complete" in again.stdout
    shutil.rmtree(folder / ".hpo")
    together = [subprocess.Popen(args, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    results = [process.communicate(timeout=300) for process in together]
    assert [process.returncode for process in together] == [0, 0], [err for _, err in results]
    storage, tracking_uri = stores_of(folder)
    assert len(optuna.load_study(study_name="space-objective-grid-seed0", storage=storage).trials) == 4
    assert len(child_runs(tracking_uri, parent_run(tracking_uri).info.run_id)) == 4  # one search run, four trials


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port on loopback that takes connections and never answers (a wedged server)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield silent.getsockname()[1]


def test_a_tracking_uri_that_cannot_serve_is_refused_in_one_line_within_a_minute(tmp_path, monkeypatch):
    """A server nothing listens on (MLflow's own retries gave up after four minutes, in silence),
    one that answers but is not MLflow, one that takes the connection and never answers, and a
    bare folder (MLflow 3 takes no new file stores)."""
    quick = lambda params, trial: params["lr"]  # noqa: E731
    space = hpo.load_space(folder_with(tmp_path) / "space.yaml")
    nothing_on = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(hpo.HpoError) as refused:
        hpo.search(quick, space, tracking_uri=nothing_on, home=tmp_path / "a", report=False, n_trials=2)
    assert time.monotonic() - started < 60
    assert str(refused.value) == (f"tracking_uri: cannot reach the MLflow tracking server at {nothing_on!r}: "
                                  "connection refused (is it running? `mlflow server` starts one)")

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    not_mlflow = f"http://127.0.0.1:{web.server_address[1]}"
    try:
        with pytest.raises(hpo.HpoError) as refused:
            hpo.search(quick, space, tracking_uri=not_mlflow, home=tmp_path / "b", report=False, n_trials=2)
    finally:
        web.shutdown()
    said = str(refused.value)
    assert said.startswith(f"tracking_uri: {not_mlflow!r} does not answer as an MLflow tracking server (")
    assert said.endswith("); check the address") and "\n" not in said

    monkeypatch.setattr(hpo.tracking._mlflow, "SERVER_ANSWERS_S", 1)  # 5 s
    with silent_port() as port:  # takes the connection, never answers (MLflow waits 120 s, seven times)
        wedged = f"http://127.0.0.1:{port}"
        with pytest.raises(hpo.HpoError) as refused:
            hpo.search(quick, space, tracking_uri=wedged, home=tmp_path / "d", report=False, n_trials=2)
    assert str(refused.value) == (f"tracking_uri: cannot reach the MLflow tracking server at {wedged!r}: no answer "
                                  "in time (is it running? `mlflow server` starts one)")

    with pytest.raises(hpo.HpoError) as refused:
        hpo.search(quick, space, tracking_uri="mlruns", home=tmp_path / "c", report=False, n_trials=2)
    assert str(refused.value) == ("tracking_uri: 'mlruns' is not a database or tracking server URI (e.g. "
                                  "sqlite:///mlflow.db, or http://host:5000 for a server)")
    assert not [home for home in "abcd" if (tmp_path / home).exists()]  # nothing written, not even the folder


def test_a_database_that_takes_the_connection_and_never_answers_is_given_up_in_one_line(tmp_path, monkeypatch):
    """A PostgreSQL address whose port takes connections but never answers (a wedged server, a
    wrong service): the study storage waited for ever, and MLflow's store retried ten times, for
    minutes. ``CONNECT_TIMEOUT_S`` (10 s) is cut to 1 s here."""
    monkeypatch.setattr(hpo.files, "CONNECT_TIMEOUT_S", 1)
    quick = lambda params, trial: params["lr"]  # noqa: E731
    space = hpo.load_space(folder_with(tmp_path) / "space.yaml")
    with silent_port() as port:
        url = f"postgresql://hpo@127.0.0.1:{port}/hpo"
        started = time.monotonic()
        with pytest.raises(hpo.HpoError) as refused:
            hpo.search(quick, space, storage=url, home=tmp_path / "a", report=False, n_trials=2)
        assert str(refused.value).startswith(f"storage: cannot open {url}: OperationalError: ")
        assert "timeout expired" in str(refused.value)
        with pytest.raises(hpo.HpoError) as refused:
            hpo.search(quick, space, tracking_uri=url, home=tmp_path / "b", report=False, n_trials=2)
        assert str(refused.value).startswith(f"tracking_uri: cannot reach the MLflow store at {url!r} (")
        assert "timeout expired" in str(refused.value)
        assert time.monotonic() - started < 30
    assert not [path for home in "ab" for path in (tmp_path / home).rglob("*.db")]  # nothing written


def test_unusable_stores_are_refused_in_one_line_with_what_to_do(tmp_path):
    quick = "def objective(params, trial):\n    return params['lr']\n"
    folder = folder_with(tmp_path, quick)
    args = [HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid", "--trials", "2"]
    (folder / ".hpo").mkdir()
    (folder / ".hpo" / "mlflow.db").write_text("not a database")
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"hpo: error: --tracking-uri: {folder / '.hpo' / 'mlflow.db'} is not a usable MLflow store (DatabaseError: "
        "(sqlite3.DatabaseError) file is not a database); move it aside to start a new one, or name another"]
    assert not (folder / ".hpo" / "optuna.db").exists()  # nothing written

    (folder / ".hpo" / "mlflow.db").unlink()
    assert subprocess.run(args, cwd=folder, capture_output=True, timeout=300).returncode == 0
    (folder / ".hpo" / "optuna.db").unlink()  # the study is gone, its MLflow runs are not
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"hpo: error: --storage: study 'space-objective-grid-seed0' is not in sqlite:///{folder}/.hpo/optuna.db, but "
        "MLflow holds 2 trial runs of its search: bring the study back, or start a fresh study with new_study "
        "(--new-study)"]
    fresh = subprocess.run([*args, "--new-study"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0 and "space-objective-grid-seed0-2: 2 trials" in fresh.stdout


HOLDS_SQLITE = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
                "c.execute('BEGIN EXCLUSIVE'); print(flush=True); time.sleep(300)")
"""A program that takes the SQLite database ``argv[1]`` and keeps it, saying so by a line."""

LOCKING = f"""
import subprocess, sys

def objective(params, trial):
    if trial.number == 1:  # another process takes the study's database and keeps it
        locker = subprocess.Popen([sys.executable, "-c", {HOLDS_SQLITE!r}, ".hpo/optuna.db"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        locker.stdout.readline()
        open("locker.pid", "w").write(str(locker.pid))
    return params["lr"]
"""


def test_a_store_another_process_keeps_locked_stops_the_search_in_one_line_naming_it(tmp_path):
    """SQLite gives up after 5 s on a database another process keeps locked (a sqlite3 shell in a
    transaction). At the start that read as a corrupt store to move aside; during a search it
    was a traceback. Both are now one line naming the process, exit 2."""
    folder = folder_with(tmp_path, LOCKING)
    args = [HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid", "--trials", "4",
            "--population", "1"]
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300)
    locker = int((folder / "locker.pid").read_text())
    try:
        assert done.returncode == 2 and "Traceback" not in done.stderr
        said = done.stderr.strip().splitlines()[-1]
        assert said.startswith(f"hpo: error: --storage: {folder / '.hpo' / 'optuna.db'} is locked by another "
                               f"process (process {locker} (")
        assert "-c import sqlite3" in said and said.endswith("then run again")
        again = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300)
        assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == said  # at the start: not "move aside"
    finally:
        os.kill(locker, signal.SIGKILL)


def as_user_without_overrides() -> list[str]:
    """Root writes anywhere; without its capabilities to override file permissions, it is held
    to them like any user (``setpriv`` from util-linux)."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []


def test_read_only_stores_are_refused_before_anything_is_written(tmp_path):
    folder = folder_with(tmp_path, "def objective(params, trial):\n    return params['lr']\n")
    locked, study = folder / "locked", folder / "study.db"
    locked.mkdir()
    run = [HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--trials", "2"]
    subprocess.run([*run, "--storage", f"sqlite:///{study}", "--tracking-uri", f"sqlite:///{folder}/first.db"],
                   cwd=folder, capture_output=True, timeout=300, check=True)
    locked.chmod(0o555)
    study.chmod(0o444)
    try:
        done = subprocess.run([*as_user_without_overrides(), *run, "--tracking-uri", f"sqlite:///{locked}/mlflow.db",
                               "--storage", f"sqlite:///{folder}/other.db"], cwd=folder, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            f"hpo: error: --tracking-uri: cannot create {locked}/mlflow.db: {locked} is read-only; name a store in a "
            "folder you can write"]
        done = subprocess.run([*as_user_without_overrides(), *run, "--storage", f"sqlite:///{study}",
                               "--tracking-uri", f"sqlite:///{folder}/second.db"], cwd=folder, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            f"hpo: error: --storage: {study} is read-only; make it writable, or name another"]
        assert not (folder / "other.db").exists() and not (folder / "second.db").exists()  # nothing written
    finally:
        locked.chmod(0o755)
        study.chmod(0o644)


def test_artifacts_of_a_sqlite_tracked_search_live_beside_its_store(tmp_path, unique):
    elsewhere = tmp_path / "runs"
    elsewhere.mkdir()
    store = tmp_path / "tracking" / "mlflow.db"
    result = hpo.search(lambda params, trial: params["lr"], hpo.load_space(folder_with(tmp_path) / "space.yaml"),
                        strategy="grid", report=False, n_trials=2, study_name=unique, experiment=unique, evaluate_test=False,
                        tracking_uri=f"sqlite:///{store}", home=elsewhere)
    client = MlflowClient(f"sqlite:///{store}")
    location = client.get_experiment(result.experiment_id).artifact_location
    assert location == (tmp_path / "tracking" / "mlartifacts" / unique).as_uri()
    assert (tmp_path / "tracking" / "mlartifacts" / unique).is_dir()


def steady(params, trial):
    for step in range(3):
        time.sleep(0.4)
        trial.report(step, val_loss=params["lr"] + 1 / (step + 1))
    return params["lr"]


def test_a_tracking_server_outage_delays_mlflow_never_training(tmp_path, stores, unique, monkeypatch):
    # The client gives up on a request in about a second, not after minutes of its own retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setattr(hpo.tracking._writer, "OUTAGE_RETRY_S", 1.0)
    port = free_port()
    server = start_mlflow_server(port, tmp_path / "server.db", tmp_path / "artifacts")
    url = f"http://127.0.0.1:{port}"
    space = hpo.SearchSpace.model_validate({
        "name": "outage", "metric": "val_loss", "direction": "minimize",
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": 8}}})
    restarted: list = []

    class Outage(hpo.SearchListener):
        """Stops the server once two trials have ended, and starts it again three trials later."""

        def __init__(self) -> None:
            self.ended = 0

        def trial_finished(self, trial) -> None:
            self.ended += 1
            if self.ended == 2:
                stop_server(server)
            if self.ended == 5:
                restarted.append(start_mlflow_server(port, tmp_path / "server.db", tmp_path / "artifacts"))

    try:
        result = hpo.search(steady, space, strategy="grid", report=False, n_trials=8, tracking_uri=url, storage=stores["storage"],
                            study_name=unique, experiment=unique, evaluate_test=False, listener=Outage())
        assert result.tracked  # written once the server was back
        assert [t.state.value for t in result.trials] == ["complete"] * 8
        assert max(t.duration_s for t in result.trials) < 3  # training never waited for MLflow
        runs = child_runs(url, result.parent_run_id)
        assert sorted(int(r.data.tags["hpo.trial_number"]) for r in runs) == list(range(8))
        assert {r.info.status for r in runs} == {"FINISHED"}
        client = MlflowClient(url)
        assert all(len(client.get_metric_history(r.info.run_id, "val_loss")) == 3 for r in runs)  # curves whole
    finally:
        for process in [server, *restarted]:
            stop_server(process)


def test_an_mlflow_store_another_process_keeps_locked_makes_writes_wait_naming_it(tmp_path):
    """An SQLite MLflow store locked by another process past SQLite's wait (MLflow's: 20 s): MLflow
    logged a traceback for each refused write, and after four tries hpo dropped the write. Such
    an error now makes writes wait, as for a tracking server that is down, with one line saying
    who holds the store."""
    store = tmp_path / "mlflow.db"
    writer = hpo.tracking._writer.Writer(MlflowClient(f"sqlite:///{store}"))
    writer.client.search_experiments()  # the store is made
    locker = subprocess.Popen([sys.executable, "-c", HOLDS_SQLITE, str(store)], stdout=subprocess.PIPE)
    try:
        assert locker.stdout.readline() == b"\n"
        with pytest.raises(sqlite3.OperationalError) as refused:
            sqlite3.connect(store, timeout=0.1).execute("BEGIN IMMEDIATE")
        said = writer.waiting_on(refused.value)
        assert said.startswith(f"the MLflow store {store} is locked by another process (process {locker.pid} "
                               f"({sys.executable} -c import sqlite3, sys, time;") and said.endswith(")")
    finally:
        locker.kill()
    assert writer.waiting_on(sqlite3.OperationalError("no such table: runs")) == ""  # refused for good: not waited for
    assert logging.getLogger("mlflow.store.db.utils").getEffectiveLevel() > logging.ERROR  # its tracebacks unsaid


def test_an_outage_past_the_end_of_the_search_is_repaired_by_the_next_run(tmp_path, stores, unique, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setattr(hpo.tracking._writer, "OUTAGE_RETRY_S", 1.0)
    monkeypatch.setattr(hpo.tracking._writer, "FLUSH_LIMIT_S", 3.0)
    port = free_port()
    servers = [start_mlflow_server(port, tmp_path / "server.db", tmp_path / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    space = hpo.SearchSpace.model_validate({
        "name": "outage", "metric": "val_loss", "direction": "minimize",
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": 4}}})

    class DownAfterOne(hpo.SearchListener):
        def trial_finished(self, trial) -> None:
            if servers[0].poll() is None:
                stop_server(servers[0])

    options = dict(strategy="grid", n_trials=4, tracking_uri=url, storage=stores["storage"], study_name=unique,
                   experiment=unique, evaluate_test=False)
    try:
        started = time.monotonic()
        first = hpo.search(steady, space, listener=DownAfterOne(), **options)
        assert not first.tracked and [t.state.value for t in first.trials] == ["complete"] * 4  # no trial lost
        assert time.monotonic() - started < 40  # one wait of FLUSH_LIMIT_S for MLflow at the end, not two of 60 s
        servers.append(start_mlflow_server(port, tmp_path / "server.db", tmp_path / "artifacts"))
        notices: list[str] = []

        class Heard(hpo.SearchListener):
            def notice(self, text: str) -> None:
                notices.append(text)

        again = hpo.search(steady, space, listener=Heard(), **options)
        assert again.tracked and [dataclasses.replace(t, run_id="") for t in again.trials] == [
            dataclasses.replace(t, run_id="") for t in first.trials]  # the runs named once MLflow is back
        assert notices and notices[0].startswith("MLflow: ")
        runs = child_runs(url, again.parent_run_id)
        assert sorted(int(r.data.tags["hpo.trial_number"]) for r in runs) == [0, 1, 2, 3]
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert {t.number: t.run_id for t in again.trials} == {int(r.data.tags["hpo.trial_number"]): r.info.run_id
                                                                for r in runs}
    finally:
        for process in servers:
            stop_server(process)


def test_a_pool_search_killed_leaves_nothing_running_after_a_rerun(tmp_path):
    folder = folder_with(tmp_path)
    args = [HPO, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid", "--trials", "4",
            "--workers", "2"]
    search = subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(list(folder.glob("started-*"))) == 2, what="both workers to start a trial")
    search.kill()
    search.wait()
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HPO_TEST_SLEEP": "0.1"})
    assert done.returncode == 0, done.stderr
    storage, tracking_uri = stores_of(folder)
    trials = optuna.load_study(study_name="space-objective-grid-seed0", storage=storage).trials
    assert not [t for t in trials if t.state.name == "RUNNING"]
    # The workers closed their trials themselves when the search died (each waits on its process).
    assert sorted(to_record(t).reason for t in trials if t.state.name == "FAIL") == ["interrupted"] * 2
    runs = child_runs(tracking_uri, parent_run(tracking_uri).info.run_id)
    assert len(runs) == len(trials) and "RUNNING" not in {r.info.status for r in runs}
    assert parent_run(tracking_uri).info.status == "FINISHED"



def test_a_deleted_mlflow_experiment_is_refused_in_one_line_with_both_ways_back(tmp_path, stores, unique):
    """Deleted in the MLflow UI (its trash), the experiment broke the next search with MLflow's
    traceback ('must be in the active state'); the line names what brings it back, and the
    command it gives does."""
    quick = lambda params, trial: params["lr"]  # noqa: E731
    space = hpo.load_space(folder_with(tmp_path) / "space.yaml")
    options = dict(strategy="grid", study_name=unique, experiment=unique, evaluate_test=False, quiet=True, **stores)
    hpo.search(quick, space, report=False, n_trials=1, **options)
    client = MlflowClient(stores["tracking_uri"])
    number = client.get_experiment_by_name(unique).experiment_id
    client.delete_experiment(number)
    with pytest.raises(hpo.HpoError) as refused:
        hpo.search(quick, space, report=False, n_trials=2, **options)
    restore = f"MLFLOW_TRACKING_URI={stores['tracking_uri']} mlflow experiments restore -x {number}"
    assert str(refused.value) == (
        f"experiment: MLflow's experiment {unique!r} is deleted: restore it (`{restore}`), delete it for good (`mlflow "
        f"gc --backend-store-uri {stores['tracking_uri']} --experiment-ids {number}`), or name another")
    assert len(optuna.load_study(study_name=unique, storage=stores["storage"]).trials) == 1  # nothing written
    variable, command = restore.split(" ", 1)
    subprocess.run(command.split(), env={**os.environ, **dict([variable.split("=", 1)])}, check=True,
                   capture_output=True, executable=str(Path(sys.executable).with_name("mlflow")))
    assert len(hpo.search(quick, space, report=False, n_trials=2, **options).trials) == 2  # back, and the search goes on
