"""The Optuna driver's pool of warm worker processes, on CPU slots (CI has no GPU)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

import hpo
import hpo.strategies
from conftest import child_runs, digits_space, left_behind, wait_for
from hpo import HpoError, SearchListener, TrialState
from hpo.dispatch import plan_slots
from hpo.store import claimed_by, retry_of, to_record
from hpo.strategies import params_key
from objectives import digits_mlp


class Heard(SearchListener):
    def __init__(self) -> None:
        self.trials: list = []

    def trial_finished(self, trial) -> None:
        self.trials.append(trial)


class WarmObjective:
    """digits_mlp with a setup step that leaves a line per call in a file; with ``workers``, a
    trial starts only once that many have set up (on a loaded machine one worker could otherwise
    run the whole budget before the other is up)."""

    def __init__(self, log: Path, workers: int = 1) -> None:
        self.log = log
        self.workers = workers

    def setup(self, device):
        with self.log.open("a") as log:
            log.write(f"{os.getpid()}\n")
        return digits_mlp.setup(device)

    def __call__(self, params, trial):
        assert trial.context is not None  # what setup returned, on this worker
        wait_for(lambda: len(self.log.read_text().split()) >= self.workers, timeout=60, what="every worker's setup")
        return digits_mlp(params, trial)


def search_run(tracking_uri: str, experiment: str):
    """The one parent run of a search, in its experiment."""
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                   "tags.`hpo.role` = 'search'")
    return parent


def lr_space(points: int) -> hpo.SearchSpace:
    return digits_space(epochs=1, lr={"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid_points": points})


def test_two_cpu_workers_run_exactly_the_budget_with_warm_setup(stores, unique, tmp_path):
    log = tmp_path / "setup.log"
    heard = Heard()
    result = hpo.search(WarmObjective(log, workers=2), lr_space(20), strategy="random", report=False, n_trials=8,
                        driver=hpo.OptunaOptions(workers=2),
                        experiment=unique, study_name=unique, evaluate_test=False, listener=heard, **stores)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    assert len(study.trials) == 8 and len(result.trials) == 8
    assert {t.state for t in result.trials} == {TrialState.COMPLETE}
    assert len({claimed_by(t) for t in study.trials}) == 2  # both workers took trials
    assert len(log.read_text().split()) == 2  # the setup ran once per worker, not once per trial
    assert len(heard.trials) == 8  # every trial reached the parent's progress bar
    assert len(child_runs(stores["tracking_uri"], result.parent_run_id)) == 8


def test_a_pool_starts_no_more_workers_than_the_budget_has_trials_left(stores, unique, tmp_path):
    """``--workers 64`` for two trials started 64 processes, each importing torch and setting up
    (on a GPU, a CUDA context each); so did a study extended by one trial."""
    log = tmp_path / "setup.log"
    options = dict(strategy="random", driver=hpo.OptunaOptions(workers=4, gpus="none"), experiment=unique,
                   study_name=unique, evaluate_test=False, **stores)
    hpo.search(WarmObjective(log), lr_space(20), report=False, n_trials=2, **options)
    assert len(log.read_text().split()) == 2
    extended = hpo.search(WarmObjective(log), lr_space(20), report=False, n_trials=3, **options)
    assert len(log.read_text().split()) == 3 and len(extended.trials) == 3
    assert len(plan_slots(4, gpus="none", at_most=2)) == 2 and len(plan_slots("auto", gpus="none", at_most=1)) == 1


def test_no_grid_point_runs_twice_with_several_workers(stores, unique):
    result = hpo.search("digits_mlp", lr_space(6), strategy="grid", report=False, n_trials=20, driver=hpo.OptunaOptions(workers=2),
                        experiment=unique, study_name=unique, evaluate_test=False, **stores)
    keys = [params_key(t.params) for t in result.trials]
    assert len(keys) == 6 == len(set(keys))


def killed_once(params, trial):
    """Blocks on its first trial until the test kills this worker; later trials just train."""
    marker = Path(os.environ["HPO_TEST_MARKERS"]) / f"hpo-kill-{os.environ['HPO_TEST_ID']}"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(600)
    return digits_mlp(params, trial)


def oom_on_small_lr(params, trial):
    if params["lr"] < 5e-3:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
    return digits_mlp(params, trial)


def test_a_worker_killed_mid_trial_loses_no_trial(stores, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("HPO_TEST_ID", unique)
    monkeypatch.setenv("HPO_TEST_MARKERS", str(tmp_path))  # the workers inherit both
    marker = tmp_path / f"hpo-kill-{unique}"

    def kill_when_marked() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(int(marker.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_when_marked)
    killer.start()
    result = hpo.search(killed_once, lr_space(4), strategy="grid", report=False, n_trials=4, driver=hpo.OptunaOptions(workers=2),
                        experiment=unique, study_name=unique, evaluate_test=False, **stores)
    killer.join()

    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    lost = [t for t in study.trials if to_record(t).reason == "worker lost"]
    assert len(lost) == 1 and lost[0].state.name == "FAIL"
    retry = [t for t in study.trials if retry_of(t) == lost[0].number]
    assert len(retry) == 1 and retry[0].params == lost[0].params and retry[0].state.name == "COMPLETE"
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 4  # the budget, all accounted
    runs = {}
    for run in child_runs(stores["tracking_uri"], result.parent_run_id):
        runs.setdefault(int(run.data.tags["hpo.trial_number"]), []).append(run)
    assert sorted(runs) == sorted(t.number for t in study.trials)  # exactly one run per trial
    assert all(len(r) == 1 for r in runs.values())
    assert runs[lost[0].number][0].info.status == "FAILED"
    assert runs[retry[0].number][0].data.tags["hpo.retry_of"] == str(lost[0].number)


SLOW_OBJECTIVE = """
import pathlib
import time

from objectives import digits_mlp


def objective(params, trial):
    pathlib.Path(f"started-{trial.number}").touch()
    time.sleep(60)  # interrupted here, mid-trial
    return digits_mlp(params, trial)
"""


def test_ctrl_c_ends_every_workers_trial_as_interrupted(tmp_path, unique):
    (tmp_path / "slow.py").write_text(SLOW_OBJECTIVE)
    (tmp_path / "space.yaml").write_text(lr_space(4).model_dump_json())
    search = subprocess.Popen(
        [str(Path(sys.executable).with_name("hpo")), "search", "space.yaml", "--objective", "slow.py:objective",
         "--strategy", "grid", "--trials", "4", "--workers", "2", "--study", unique, "--experiment", unique],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob("started-*"))) < 2:  # both workers are inside a trial
        assert search.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(search.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
    _, stderr = search.communicate(timeout=120)

    assert search.returncode == 130 and "interrupted" in stderr
    trials = optuna.load_study(study_name=unique, storage=f"sqlite:///{tmp_path / '.hpo' / 'optuna.db'}").trials
    assert [(t.state.name, to_record(t).reason) for t in trials] == [("FAIL", "interrupted")] * 2
    tracking_uri = f"sqlite:///{tmp_path / '.hpo' / 'mlflow.db'}"
    parent = search_run(tracking_uri, unique)
    runs = child_runs(tracking_uri, parent.info.run_id)
    assert sorted((r.info.status, r.data.tags["hpo.reason"]) for r in runs) == [("FAILED", "interrupted")] * 2
    assert parent.info.status == "KILLED"


class MissingData:
    """An objective whose data is not where its setup looks."""

    def setup(self, device):
        raise FileNotFoundError("data/train.npy")

    def __call__(self, params, trial):
        return 1.0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_setup_stops_the_search_with_one_error(stores, unique, workers):
    with pytest.raises(HpoError, match=r"objective: its setup on cpu failed: FileNotFoundError: data/train\.npy"):
        hpo.search(MissingData(), lr_space(4), strategy="grid", report=False, n_trials=4, driver=hpo.OptunaOptions(workers=workers), experiment=unique,
                   study_name=unique, evaluate_test=False, **stores)
    assert left_behind(stores, unique, unique) == []  # nothing ran, nothing stays


def kills_its_worker(params, trial):
    os.kill(os.getpid(), signal.SIGKILL)  # a crash that takes every worker down, every time


def test_workers_that_keep_dying_stop_the_search_with_every_trial_closed(stores, unique):
    with pytest.raises(HpoError, match=r"workers: workers keep dying \(5 so far, the last killed by SIGKILL\)"):
        hpo.search(kills_its_worker, lr_space(4), strategy="grid", report=False, n_trials=4, driver=hpo.OptunaOptions(workers=2), experiment=unique,
                   study_name=unique, evaluate_test=False, **stores)
    trials = optuna.load_study(study_name=unique, storage=stores["storage"]).trials
    assert {t.state.name for t in trials} == {"FAIL"}
    assert {to_record(t).reason for t in trials} <= {"worker lost", "interrupted"}
    runs = child_runs(stores["tracking_uri"], search_run(stores["tracking_uri"], unique).info.run_id)
    assert sorted(int(r.data.tags["hpo.trial_number"]) for r in runs) == sorted(t.number for t in trials)
    assert {r.info.status for r in runs} == {"FAILED"}


def test_out_of_memory_fails_the_trial_and_the_worker_goes_on(stores, unique):
    result = hpo.search(oom_on_small_lr, lr_space(4), strategy="grid", report=False, n_trials=4, driver=hpo.OptunaOptions(workers=2),
                        experiment=unique, study_name=unique, evaluate_test=False, **stores)
    reasons = sorted((t.params["lr"] < 5e-3, t.state.value, t.reason) for t in result.trials)
    assert reasons == [(False, "complete", "")] * 2 + [(True, "failed", "cuda_oom")] * 2


def test_cpu_slots_share_the_cores():
    slots = plan_slots(2, gpus="none")
    assert [s.device for s in slots] == ["cpu", "cpu"]
    assert all(s.threads == max(1, (os.cpu_count() or 1) // 2) for s in slots)
    assert len(plan_slots("auto", gpus="none")) == max(1, (os.cpu_count() or 1) // 2)


def test_a_machine_without_a_gpu_driver_plans_cpu_slots_without_importing_torch(tmp_path):
    """Counting GPUs where no GPU driver is loaded takes no torch import (a second per search)."""
    code = ("import sys; import hpo.dispatch._slots as slots; "
            f"slots.GPU_DRIVER_FILES = ({str(tmp_path / 'nvidiactl')!r},); "
            "print(slots.visible_gpus(), [s.device for s in slots.plan_slots(1, gpus='all')], 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "['cpu']", "False"]


def test_gpu_slots_spread_over_the_gpus_and_pin_through_the_inherited_device_list(monkeypatch):
    """Planning for a machine that shows two GPUs, as CUDA_VISIBLE_DEVICES=4,6 does on a
    shared server (tests/test_gpu.py runs the slots for real where there is a GPU)."""
    monkeypatch.setattr("hpo.dispatch._slots.visible_gpus", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    slots = plan_slots("auto", gpus="all", trials_per_gpu=2)
    assert [(s.name, s.device, s.cuda_visible_devices) for s in slots] == [
        ("cuda:0/0", "cuda:0", "4"), ("cuda:1/0", "cuda:1", "6"), ("cuda:0/1", "cuda:0", "4"), ("cuda:1/1", "cuda:1", "6"),
    ]
    assert {s.threads for s in slots} == {max(1, (os.cpu_count() or 1) // 4)}
    (second,) = plan_slots("auto", gpus="1")
    assert second.device == "cuda:1"  # one slot runs in this process, which sees both GPUs
    threads = torch.get_num_threads()
    try:
        pinned = second.pin()  # what a fresh worker process does first
    finally:
        torch.set_num_threads(threads)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert pinned.device == "cuda:0"  # the only GPU that worker sees


def test_trials_per_gpu_without_a_gpu_says_where_the_trials_run(stores, unique, tmp_path):
    """It was silent: four trials per GPU asked, one trial at a time on the CPU given."""
    said = []

    class Notices(SearchListener):
        def notice(self, text):
            said.append(text)

    hpo.search(lambda params, trial: params["lr"], lr_space(2), strategy="grid", report=False, n_trials=2, experiment=unique,
               study_name=unique, home=tmp_path, evaluate_test=False, listener=Notices(), **stores,
               driver=hpo.OptunaOptions(gpus="none", workers=1, trials_per_gpu=4))
    assert said[:1] == ["--trials-per-gpu 4: no GPU named (--gpus none), so trials run on the CPU, 1 trial at a time "
                    "(--workers)"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": "many"}, "workers: expected a number or 'auto'"),
        ({"workers": 0}, "workers: must be at least 1"),
        ({"gpus": "x"}, "gpus: expected 'all', 'none' or GPU ids"),
        ({"gpus": "7"}, "gpus: no GPU 7 on this machine"),
        ({"trials_per_gpu": 0}, "trials_per_gpu: must be at least 1"),
    ],
)
def test_bad_worker_flags_are_refused(kwargs, message):
    with pytest.raises(HpoError, match=message):
        plan_slots(**kwargs)


def waits_for_a_second_process(params, trial):
    """Trains once ``HPO_TEST_PROCESSES`` processes (two by default) have started a trial of the
    search (at most two minutes): a process joins while trials remain, however slowly it starts."""
    folder = Path(os.environ["HPO_TEST_MARKERS"])
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(folder.iterdir())) < int(os.environ.get("HPO_TEST_PROCESSES", 2)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return digits_mlp(params, trial)


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "worker-pool"])
def test_hpo_worker_joins_a_running_search_on_postgresql(workers, postgres_url, stores, unique, tmp_path, monkeypatch,
                                                         capsys):
    """The search's listener, and so its progress bar, hears of the trials the joined worker
    ended (the search's bar ended at the trials it ran itself: 1/8 where the worker ran 7), each trial
    once."""
    monkeypatch.setenv("HPO_TEST_MARKERS", str(tmp_path / "markers"))
    monkeypatch.setenv("HPO_TEST_PROCESSES", str(workers + 1))
    (tmp_path / "markers").mkdir()
    results = {}
    started = threading.Event()
    here, elsewhere = [], []

    class Heard(SearchListener):
        def resumed(self, trials) -> None:  # the study exists and holds its plan
            started.set()

        def trial_finished(self, trial) -> None:
            here.append(trial.number)

        def ended_elsewhere(self, trials) -> None:
            elsewhere.extend(trial.number for trial in trials)

    def search() -> None:
        results["search"] = hpo.search(waits_for_a_second_process, lr_space(8), strategy="grid", report=False, n_trials=8,
                                       driver=hpo.OptunaOptions(workers=workers), population=1,
                                       storage=postgres_url, tracking_uri=stores["tracking_uri"], experiment=unique,
                                       study_name=unique, evaluate_test=False, listener=Heard())

    thread = threading.Thread(target=search)
    thread.start()
    assert started.wait(timeout=120)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    joined = subprocess.run([str(Path(sys.executable).with_name("hpo")), "worker", "--study", unique,
                             "--storage", postgres_url, "--workers", "1"],
                            capture_output=True, text=True, timeout=300, env=env)
    thread.join()
    assert joined.returncode == 0, joined.stderr
    ran = int(joined.stderr.split("ran ")[1].split()[0])
    assert ran >= 1  # the second process drew from the budget
    joining = joined.stderr.splitlines()[0]  # a worker says at once what it joined, then counts its own trials
    assert joining.startswith(f"Joining study {unique!r}: ") and "of its 8 trials done" in joining, joined.stderr
    assert f"{ran} here" in joined.stderr, joined.stderr

    study = optuna.load_study(study_name=unique, storage=postgres_url)
    keys = [params_key(t.params) for t in study.trials]
    seen = [(t.number, t.state.name, t.params, t.user_attrs) for t in study.trials]  # what a failure shows
    assert len(study.trials) == 8 and len(set(keys)) == 8, seen  # the budget exactly, no point twice
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert len({claimed_by(t) for t in study.trials}) == workers + 1
    assert len(results["search"].trials) == 8
    assert len(child_runs(stores["tracking_uri"], results["search"].parent_run_id)) == 8
    assert len(elsewhere) == ran and sorted(here + elsewhere) == list(range(8)), (here, elsewhere)
    bar = [line for line in capsys.readouterr().err.splitlines() if line.startswith("search ")]
    assert bar and " 8/8 8 complete 0 pruned 0 failed" in bar[-1], bar


def test_joining_an_unknown_study_is_a_one_line_error_with_the_name_it_is_closest_to(postgres_url, stores, unique):
    hpo.search(lambda params, trial: params["lr"], digits_space(epochs=1), strategy="grid", report=False, n_trials=1,
               storage=postgres_url, tracking_uri=stores["tracking_uri"], study_name=f"{unique}-seed0",
               experiment=unique, evaluate_test=False, quiet=True)
    with pytest.raises(HpoError) as error:
        hpo.join(f"{unique}-seed", postgres_url)
    assert str(error.value) == (f"study_name: no study '{unique}-seed' in {postgres_url}: did you mean "
                                f"'{unique}-seed0'?")


def slow_quadratic(params, trial):
    time.sleep(0.3)
    return (math.log10(params["lr"]) + 2) ** 2


def test_a_coarse_to_fine_stage_starts_when_the_stage_before_has_finished(stores, unique):
    space = hpo.SearchSpace.model_validate(
        {"name": "c2f", "metric": "loss", "direction": "minimize",
         "params": {"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}}})
    hpo.search(slow_quadratic, space, strategy="coarse-to-fine", report=False, n_trials=9, driver=hpo.OptunaOptions(workers=2), experiment=unique,
               study_name=unique, evaluate_test=False, **stores)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    stages = {}
    for trial in study.trials:
        stages.setdefault(to_record(trial).stage, []).append(trial)
    assert sorted((stage, len(trials)) for stage, trials in stages.items()) == [(0, 3), (1, 3), (2, 3)]
    for stage in (1, 2):
        assert min(t.datetime_start for t in stages[stage]) >= max(t.datetime_complete for t in stages[stage - 1])


def lr_only(params, trial):
    return params["lr"]


def value_from_environment(params, trial):
    return float(os.environ["HPO_TEST_VALUE"])


def test_each_searchs_workers_see_its_environment_as_the_search_starts(stores, unique, monkeypatch):
    """Workers are forked from a server that one search starts and later searches of the same
    process reuse: each search's workers still see that search's environment, not the server's."""
    for value in (1.5, 2.5):
        monkeypatch.setenv("HPO_TEST_VALUE", str(value))
        name = f"{unique}-{value}"
        result = hpo.search(value_from_environment, lr_space(2), strategy="grid", report=False, n_trials=2,
                            driver=hpo.OptunaOptions(workers=2), experiment=name, study_name=name,
                            evaluate_test=False, **stores)
        assert [t.value for t in result.trials] == [value, value]


@pytest.mark.parametrize("round_", range(4))
def test_a_grid_under_a_pool_runs_every_point_exactly_once(stores, unique, round_):
    """Workers claiming at the same moment: the parameters are fixed in the same transaction
    that starts the trial, so no worker sees a trial without them and hands its point out again."""
    space = lr_space(20)
    result = hpo.search(lr_only, space, strategy="grid", report=False, n_trials=20, driver=hpo.OptunaOptions(workers=2),
                        experiment=unique, study_name=unique, evaluate_test=False, **stores)
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    assert sorted(params_key(t.params) for t in study.trials) == sorted(params_key(p) for p in space.grid())
    assert len(result.trials) == 20


@pytest.mark.parametrize("strategy", ["tpe", "gp"])
def test_sampled_strategies_under_a_pool_suggest_distinct_configurations(stores, unique, strategy):
    """Two workers claim at once: each sample sees the other's running trial (past GP's 10
    random trials too)."""
    result = hpo.search(lr_only, lr_space(4), strategy=strategy, report=False, n_trials=14, driver=hpo.OptunaOptions(workers=2),
                        experiment=unique, study_name=unique, evaluate_test=False, **stores)
    lrs = [t.params["lr"] for t in result.trials]
    assert len(lrs) == 14 == len(set(lrs))


class StopAfter(SearchListener):
    """Stops the search (as Ctrl-C would, between two trials) once ``n`` trials have ended."""

    def __init__(self, n: int) -> None:
        self.n = n

    def trial_finished(self, trial) -> None:
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def test_a_joined_search_continues_the_same_plan(stores, unique):
    """The strategy's own settings (four stages, not the default three) are saved with the study."""
    strategy = hpo.strategies.CoarseToFineStrategy(seed=0, stages=4)
    space = lr_space(3)
    with pytest.raises(KeyboardInterrupt):
        hpo.search("digits_mlp", space, strategy=strategy, report=False, n_trials=8, experiment=unique, study_name=unique,
                   evaluate_test=False, listener=StopAfter(3), **stores)
    ran = hpo.join(unique, stores["storage"], driver=hpo.OptunaOptions(workers=1))
    assert ran == 5
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    budgets, _ = strategy.stage_budgets(space, 8)
    assert budgets == [3, 2, 2, 1]  # three stages would be [3, 3, 2]
    stages = [to_record(t).stage for t in sorted(study.trials, key=lambda t: t.number)]
    assert stages == [0, 0, 0, 1, 1, 2, 2, 3]


def test_what_a_workers_trial_prints_comes_above_the_progress_bar_on_a_terminal(tmp_path):
    """Written straight to the terminal, a pool worker's prints ran into the bar's line
    (``search ━━━ 0/4 ... 0:00:03epoch 0 lr 0.0081``): they go through the search's process now,
    as a trial's own prints do (a Ray actor's alike: ``test_own_objective.py``)."""
    import pty
    import re

    (tmp_path / "space.yaml").write_text("metric: val_loss\ndirection: minimize\nparams:\n"
                                         "  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}\n")
    (tmp_path / "mine.py").write_text("import sys, time\n\ndef objective(params, trial):\n    for epoch in range(3):\n"
                                      "        print(f'epoch {epoch} of trial {trial.number}')\n"
                                      "        time.sleep(0.3)\n"
                                      "    print(f'trial {trial.number} done', file=sys.stderr)\n"
                                      "    return params['lr']\n")
    terminal, its_end = pty.openpty()
    search = subprocess.Popen([str(Path(sys.executable).with_name("hpo")), "search", "space.yaml", "--objective",
                               "mine.py:objective", "--strategy", "random", "--trials", "4", "--workers", "2"],
                              cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=its_end, stderr=its_end,
                              env=os.environ | {"COLUMNS": "120"})
    os.close(its_end)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the search ended: its side of the terminal closed
            break
        if not chunk:
            break
        shown += chunk
    assert search.wait(timeout=120) == 0
    lines = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.decode()).replace("\r", "\n").splitlines()
    printed = sorted(line for line in lines if "epoch" in line or "done" in line)
    assert printed == sorted([f"epoch {e} of trial {n}" for e in range(3) for n in range(4)] +
                             [f"trial {n} done" for n in range(4)])
