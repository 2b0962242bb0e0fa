"""Ray clusters as users start them: ``ray start --head`` with Ray's default token
authentication, reached through ``--ray-address`` and ``RAY_ADDRESS``; no address means a local
instance of the search's own, never a cluster left behind; a cluster that is unreachable at the
start, or whose head dies mid-search, ends the search in one line within a minute with its
trials closed. Each search runs as a user runs it: ``hpo search`` in a process of its own, on ``lr_wd`` cut short."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest import ROOT, free_port, short_lr_wd

# One worker runs them all (``make test``'s ``--dist loadgroup``): one head started with
# ``ray start`` serves both ways of naming it.
pytestmark = pytest.mark.xdist_group("ray_start")

RAY = str(Path(sys.executable).with_name("ray"))
HPO = [sys.executable, "-m", "hpo.cli", "search", "lr_wd.yaml", "--driver", "ray", "--strategy", "random",
       "--objective", "digits_mlp", "--no-test"]
SLOW = """
import pathlib, time

def objective(params, trial):
    pathlib.Path(__file__).with_name("running").touch()
    for step in range(120):
        time.sleep(0.5)
        trial.report(step, val_loss=params["lr"] + 1 / (step + 1))
    return params["lr"]
"""


def _processes_of(marker: str) -> list[int]:
    """The processes whose command line names ``marker`` (this module's Ray head: its folder)."""
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if int(pid) != os.getpid()]


@pytest.fixture(autouse=True)
def space(tmp_path):
    return short_lr_wd(tmp_path)


@pytest.fixture(scope="module")
def user_home(tmp_path_factory):
    """A home of the user's own, where Ray keeps its token (``~/.ray/auth_token``), as on a
    machine where Ray has run before: ``ray start --head`` then turns token authentication on."""
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    assert (home / ".ray" / "auth_token").is_file()
    return env


def short_folder(name: str) -> Path:
    """A folder for a head's files whose path leaves room for Ray's socket names (107 bytes at
    most, and pytest's own folders can be long: ``/tmp/pytest-of-root/pytest-70/popen-gw0/...``)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))


def _start_head(env: dict[str, str], folder: Path) -> str:
    port = free_port()
    done = subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                           "--disable-usage-stats", f"--temp-dir={folder}"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Token authentication is enabled" in done.stderr + done.stdout  # Ray's default here
    return f"127.0.0.1:{port}"


def _stop_head(folder: Path) -> None:
    """Stop this head's processes only (``ray stop`` would end every Ray process on the machine)."""
    for pid in _processes_of(str(folder)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_head(user_home, tmp_path_factory):
    folder = short_folder("rayhead")
    address = _start_head(user_home, folder)
    yield address
    _stop_head(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("how", ["--ray-address", "RAY_ADDRESS"])
def test_a_cluster_started_with_ray_start_runs_the_search(how, ray_head, user_home, tmp_path):
    env = {**user_home, "RAY_ADDRESS": ray_head} if how == "RAY_ADDRESS" else user_home
    address = ["--ray-address", ray_head] if how == "--ray-address" else []
    done = subprocess.run([*HPO, "--trials", "2", *address], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "InvalidAuthToken" not in done.stderr
    assert "2 trials (2 complete, 0 pruned, 0 failed)" in done.stdout


@pytest.mark.parametrize("named_by", ["--ray-address", "RAY_ADDRESS"])
def test_an_unreachable_cluster_is_refused_in_one_line_before_anything_is_written(named_by, user_home, tmp_path):
    """The line names where the address came from: ``RAY_ADDRESS`` may have been set for another tool."""
    address = f"127.0.0.1:{free_port()}"
    flags, env = (["--ray-address", address], user_home) if named_by == "--ray-address" else \
        ([], user_home | {"RAY_ADDRESS": address})
    started = time.monotonic()
    done = subprocess.run([*HPO, "--trials", "2", *flags], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert time.monotonic() - started < 60
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hpo: error: {named_by}: cannot reach a Ray cluster at {address!r}: connection refused (is its head "
        "running? `ray start --head` starts one)"]
    assert not (tmp_path / ".hpo" / "optuna.db").exists() and not (tmp_path / ".hpo" / "mlflow.db").exists()


def test_the_dashboards_address_that_ray_job_submit_takes_is_refused_naming_the_heads_port(user_home, tmp_path):
    """Ray's job submission has users export ``RAY_ADDRESS=http://HOST:8265``: a search given it
    said ``name or service not known``, as if the head were down."""
    address = "http://127.0.0.1:8265"
    done = subprocess.run([*HPO, "--trials", "2"], cwd=tmp_path, env=user_home | {"RAY_ADDRESS": address},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hpo: error: RAY_ADDRESS: {address!r} is a web address (Ray's dashboard, which `ray job submit` takes); a "
        "search joins the cluster at its head's port, as `ray start --head` prints it: `ray start "
        "--address='HOST:6379'` means HOST:6379"]
    assert not (tmp_path / ".hpo" / "optuna.db").exists() and not (tmp_path / ".hpo" / "mlflow.db").exists()


@pytest.mark.parametrize("driver", ["optuna", "ray"])
def test_make_search_leaves_ray_address_to_the_ray_driver(driver, user_home, tmp_path):
    """``make search`` passed a ``RAY_ADDRESS`` exported for another tool as ``--ray-address``, which the
    optuna driver refused: ``make search SPACE=lr_wd`` failed in such a shell."""
    address = "http://127.0.0.1:8265" if driver == "optuna" else f"127.0.0.1:{free_port()}"
    (tmp_path / "quick.py").write_text("def objective(params, trial):\n    return params['lr']\n")
    done = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "-o", str(ROOT / ".venv" / ".installed"),
                           f"VENV={ROOT / '.venv'}", "search", "SPACE=lr_wd.yaml", "OBJECTIVE=quick.py:objective", "TRIALS=1",
                           "STRATEGY=random", f"DRIVER={driver}"], cwd=tmp_path, env=user_home | {"RAY_ADDRESS": address},
                          capture_output=True, text=True, timeout=300)
    if driver == "optuna":
        assert done.returncode == 0, done.stderr
        assert "1 trial (1 complete, 0 pruned, 0 failed)" in done.stdout
    else:  # the driver reads it, and names it
        assert done.returncode != 0
        assert done.stderr.splitlines()[0] == (f"hpo: error: RAY_ADDRESS: cannot reach a Ray cluster at {address!r}: "
                                               "connection refused (is its head running? `ray start --head` starts one)")


def test_a_request_no_machine_can_meet_is_refused_in_one_line_leaving_no_study(user_home, tmp_path):
    """Found once Ray has started, after the progress bar was drawn: its empty bar stood above the
    error line."""
    done = subprocess.run([*HPO, "--trials", "2", "--cpus-per-trial", "512"], cwd=tmp_path, env=user_home,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 2
    said = ("hpo: error: --cpus-per-trial: no machine of the Ray cluster has 512 CPUs and 0 GPUs for a trial (the "
            "largest has CPU ")
    assert [line[:len(said)] for line in done.stderr.strip().splitlines()] == [said], done.stderr
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / '.hpo' / 'optuna.db'}") == []


def test_without_an_address_a_stale_cluster_file_is_not_joined(user_home, tmp_path):
    """A head that died leaves its address in Ray's temporary folder; a bare ``ray.init()``
    tries to join it (and waited minutes there, in silence)."""
    stale = Path("/tmp/ray/ray_current_cluster")
    before = stale.read_text() if stale.exists() else None
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text(f"127.0.0.1:{free_port()}")
    try:
        done = subprocess.run([*HPO, "--trials", "2"], cwd=tmp_path, env=user_home, capture_output=True, text=True,
                              timeout=240)
    finally:
        if before is None:
            stale.unlink(missing_ok=True)
        else:
            stale.write_text(before)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 trials (2 complete, 0 pruned, 0 failed)" in done.stdout


def test_the_head_killed_mid_search_ends_it_in_one_line_with_its_trials_closed(user_home, tmp_path_factory,
                                                                              tmp_path):
    folder = short_folder("doomedhead")
    address = _start_head(user_home, folder)
    (tmp_path / "slow.py").write_text(SLOW)
    search = subprocess.Popen([*HPO, "--trials", "3", "--ray-address", address, "--objective", "slow.py:objective",
                               "--study", "doomed"], cwd=tmp_path, env={**user_home, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "running").exists():
            assert search.poll() is None and time.monotonic() < deadline, search.communicate()[1][-2000:]
            time.sleep(0.5)
        _stop_head(folder)  # the head machine is gone: its processes killed
        killed = time.monotonic()
        _, stderr = search.communicate(timeout=90)
        assert time.monotonic() - killed < 60
    finally:
        if search.poll() is None:
            search.kill()
        _stop_head(folder)
        shutil.rmtree(folder, ignore_errors=True)
    assert search.returncode == 2
    said = [line for line in stderr.splitlines() if line.startswith("hpo: ")]
    assert said == [f"hpo: error: the Ray cluster at {address!r} stopped answering (connection refused); its "
                    "running trials are closed as interrupted: run the search again once the cluster is back"], stderr
    study = optuna.load_study(study_name="doomed", storage=f"sqlite:///{tmp_path / '.hpo' / 'optuna.db'}")
    assert study.trials and all(t.state is optuna.trial.TrialState.FAIL for t in study.trials)
    assert {t.user_attrs["hpo.result"]["reason"] for t in study.trials} == {"interrupted"}
    client = MlflowClient(f"sqlite:///{tmp_path / '.hpo' / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("lr_wd").experiment_id],
                                   "tags.`hpo.role` = 'search'")
    assert parent.info.status == "KILLED"
