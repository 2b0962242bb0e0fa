"""A user's own objective, as a user meets it: a file in a fresh folder, the CLI or the API, and
the one line expected when something is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

import hpo
from conftest import child_runs
from hpo.dispatch import plan_slots
from hpo.store import to_record

SPACE = """
metric: val_loss
direction: minimize
params:
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true, grid: [0.0001, 0.001, 0.01, 0.1]}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true, grid: [1.0e-5, 1.0e-3]}
"""

MISNAMED = """
def objective(params, trial):
    for step in range(3):
        trial.report(step, val_loss=1.0 / (step + 1))
    return params["learning_rate"] * 2
"""


def hpo_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``hpo ARGS`` in ``folder``; a search leaves its report out (what these tests look at is the
    objective's trials: the report's tests are in test_comparing_trials.py and test_cli.py)."""
    report = ["--no-report"] if args[:1] == ("search",) else []
    return subprocess.run([str(Path(sys.executable).with_name("hpo")), *args, *report], cwd=folder,
                          capture_output=True, text=True, timeout=600)


def user_folder(tmp_path: Path, objective: str, space: str = SPACE) -> Path:
    (tmp_path / "space.yaml").write_text(space)
    (tmp_path / "mine.py").write_text(textwrap.dedent(objective))
    return tmp_path


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def test_every_trial_failing_alike_stops_the_search_with_the_line_that_raised(tmp_path):
    folder = user_folder(tmp_path, MISNAMED)
    done = hpo_cli(folder, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid",
                   "--trials", "8", "--population", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert last_line(done) == ("hpo: error: mine.py:5: KeyError: 'learning_rate' — the space has lr, weight_decay "
                               "(the first 3 trials failed so; the search stops)")
    trials = optuna.load_study(study_name="space-objective-grid-seed0",
                               storage=f"sqlite:///{folder / '.hpo' / 'optuna.db'}").trials
    assert len(trials) == 3  # not the whole budget
    records = [to_record(t) for t in trials]
    assert all('params["learning_rate"]' in r.traceback and r.where == "mine.py:5" for r in records)
    tracking_uri = f"sqlite:///{folder / '.hpo' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("space").experiment_id], "tags.`hpo.role` = 'search'")
    runs = child_runs(tracking_uri, parent.info.run_id)
    assert len(runs) == 3 and parent.info.status == "KILLED"
    for run in runs:
        assert run.data.tags["hpo.where"] == "mine.py:5"
        text = Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read_text()
        assert "KeyError: 'learning_rate'" in text

    # Fixed, the same command goes on: a study of failed trials has no result a changed objective would mix with.
    (folder / "mine.py").write_text(MISNAMED.replace('params["learning_rate"]', 'params["lr"]'))
    fixed = hpo_cli(folder, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid",
                    "--trials", "8", "--population", "1")
    assert fixed.returncode == 0, fixed.stderr
    assert "3 trials that failed in an earlier run of study 'space-objective-grid-seed0' run again (the objective " \
        "may have been fixed since)" in fixed.stderr
    assert "8 complete, 0 pruned, 0 failed" in fixed.stdout  # the failed configurations ran again


def test_the_api_raises_the_same_line(tmp_path, stores, unique):
    def objective(params, trial):
        return params["learning_rate"]

    with pytest.raises(hpo.HpoError, match=r"^tests/test_own_objective\.py:\d+: KeyError: 'learning_rate' — the space has "
                                           r"lr, weight_decay \(the first 3 trials"):
        hpo.search(objective, hpo.load_space(user_folder(tmp_path, MISNAMED) / "space.yaml"), strategy="grid",
                   n_trials=8, study_name=unique, experiment=unique, evaluate_test=False, **stores)


def test_sporadic_failures_fail_only_their_trial_and_a_rerun_retries_them(tmp_path):
    sometimes = """
    def objective(params, trial):
        if params["lr"] == 0.1:
            raise ValueError("too fast for now")
        return params["lr"]
    """
    folder = user_folder(tmp_path, sometimes)
    args = ["search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "grid", "--trials", "8"]
    first = hpo_cli(folder, *args)
    assert first.returncode == 0, first.stderr
    assert "6 complete, 0 pruned, 2 failed" in first.stdout
    (folder / "mine.py").write_text("def objective(params, trial):\n    return params['lr']\n")  # fixed
    changed = hpo_cli(folder, *args)
    assert changed.returncode == 2
    assert last_line(changed) == (
        "hpo: error: --objective: mine.py:objective changed since study 'space-objective-grid-seed0' finished 6 trials "
        "with it; go on with them with keep_study (--keep-study), or start a fresh study with new_study (--new-study)")
    again = hpo_cli(folder, *args, "--keep-study")
    assert again.returncode == 0, again.stderr
    assert "Resuming study 'space-objective-grid-seed0': 6 of its 8 trials done" in again.stderr
    assert "2 trials that failed in an earlier run of study 'space-objective-grid-seed0' run again" in again.stderr
    assert "8 complete, 0 pruned, 0 failed" in again.stdout  # the failed configurations ran again
    fresh = hpo_cli(folder, *args, "--new-study")
    assert fresh.returncode == 0 and "space-objective-grid-seed0-2: 8 trials" in fresh.stdout


@pytest.mark.parametrize(
    ("objective", "line"),
    [
        ("def objective(params):\n    return 1.0\n",
         "--objective: mine.py:objective(params) cannot be called as objective(params, trial)"),
        ("def objective(config):\n    return 1.0\n",  # Ray Tune's trainable
         "--objective: mine.py:objective(config) cannot be called as objective(params, trial): hpo passes the trial "
         "too, whose trial.report(step, metric=value) takes the place of Ray Tune's tune.report"),
        ("class Objective:\n    def __call__(self, params, trial):\n        return 1.0\n\nobjective = Objective\n",
         "--objective: mine.py:objective() cannot be called as objective(params, trial): it is a class; name an "
         "object of it, such as objective = Objective() at the module's end"),
        ("def objective(params, trial)\n    return 1.0\n", "--objective: mine.py:1: SyntaxError: expected ':'"),
        ("import torch\nDATA = torch.load('missing.pt')\n\ndef objective(params, trial):\n    return 1.0\n",
         "--objective: mine.py:2: FileNotFoundError: [Errno 2] No such file or directory: 'missing.pt'"),
    ],
    ids=["signature", "ray-tune-signature", "class", "syntax", "import-time-error"],
)
def test_an_objective_that_cannot_run_is_refused_before_anything_is_written(tmp_path, objective, line):
    folder = user_folder(tmp_path, objective)
    done = hpo_cli(folder, "search", "space.yaml", "--objective", "mine.py:objective")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"hpo: error: {line}"]
    assert not (folder / ".hpo").exists()


def test_a_metric_the_objective_does_not_report_stops_after_the_first_trial(tmp_path):
    reports_val_loss = """
    def objective(params, trial):
        for step in range(4):
            trial.report(step, val_loss=params["lr"] * (4 - step))
        return params["lr"]
    """
    folder = user_folder(tmp_path, reports_val_loss, SPACE.replace("metric: val_loss", "metric: loss"))
    done = hpo_cli(folder, "search", "space.yaml", "--objective", "mine.py:objective", "--pruner", "median",
                   "--population", "1")
    assert done.returncode == 2
    assert last_line(done) == (
        "hpo: error: its reports had no 'loss', which the pruner reads (they had val_loss) — report 'loss', or name "
        "the space's metric after what the objective reports (the first trial failed so; the search stops)")


@pytest.mark.parametrize("workers", ["1", "2"], ids=["in-process", "worker-pool"])
def test_ray_tunes_report_stops_the_search_at_the_first_trial_saying_what_takes_its_place(workers, tmp_path):
    """Outside Tune, where hpo runs trials, Ray's report drops the metrics with a warning, once a
    process: the search ran on, its trials complete and their curves empty. In a pool's workers
    the line is the user's too: the objective, sent by value, raised from ``<dynamic-code>``
    (cloudpickle 3.1's name for the code it sends), and the line named an installed file."""
    tune_style = """
    from ray import tune

    def objective(params, trial):
        for epoch in range(3):
            tune.report({"val_loss": params["lr"] + 1 / (epoch + 1)})
        return params["lr"]
    """
    folder = user_folder(tmp_path, tune_style)
    done = hpo_cli(folder, "search", "space.yaml", "--objective", "mine.py:objective", "--strategy", "random",
                   "--trials", "6", "--workers", workers)
    assert done.returncode == 2
    assert last_line(done) == (
        "hpo: error: mine.py:6: tune.report(...) is Ray Tune's: it drops what it is given outside Tune, where hpo runs "
        "trials; report with trial.report(step, val_loss=value) (the first trial failed so; the search stops)")
    trials = optuna.load_study(study_name="space-objective-random-seed0",
                               storage=f"sqlite:///{folder / '.hpo' / 'optuna.db'}").trials
    reported = [to_record(t) for t in trials if to_record(t).reason.startswith("tune.report(...)")]
    assert reported  # both workers may have started a trial before the first one stopped the search
    assert all('File "mine.py", line 6, in objective\n    tune.report(' in r.traceback for r in reported)


def test_a_script_without_a_main_guard_runs_with_workers_and_loads_no_torch_it_does_not_need(tmp_path):
    """Torch takes seconds to load: the search, and each worker, leave it to the objective that
    needs it, and a worker's torch still keeps to the worker's share of the cores."""
    script = """
    import os, sys
    import hpo

    def objective(params, trial):
        loaded = "torch" in sys.modules
        import torch
        with open(f"seen-{os.getpid()}.txt", "a") as seen:
            seen.write(f"{loaded} {torch.get_num_threads()}\\n")
        for step in range(3):
            trial.report(step, val_loss=params["lr"] + 1 / (step + 1))
        return params["lr"]

    result = hpo.search(objective, "space.yaml", strategy="grid", n_trials=8, driver=hpo.OptunaOptions(workers=2))
    print("best", result.best_params["lr"], "torch" in sys.modules)
    """
    folder = user_folder(tmp_path, "")
    (folder / "search.py").write_text(textwrap.dedent(script))
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "search.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip().splitlines() == ["best 0.0001 False"]  # the script ran once, in its own process
    first_calls = [path.read_text().splitlines()[0].split() for path in folder.glob("seen-*.txt")]
    assert first_calls and all(loaded == "False" for loaded, _ in first_calls), first_calls
    assert {int(threads) for _, threads in first_calls} == {plan_slots(2)[0].threads}  # each worker's share


@pytest.mark.parametrize(("name", "line"), [
    ("mine.py:objectiv", "'mine.py' has no callable 'objectiv'; did you mean 'objective'?"),
    ("mine.py:train", "'mine.py' has no callable 'train'"),
    ("mine:objectiv", "'mine' has no callable 'objectiv'; did you mean 'objective'?"),  # beside it, as python -m finds it
    ("mines:objective", "cannot import 'mines': No module named 'mines'"),
    ("mine.py", "'mine.py' names no function: write 'mine.py:FUNCTION'"),  # was: unknown built-in objective
    (":objective", "':objective' names no file or module: write 'FILE.py:objective' or 'MODULE:objective'"),  # a traceback
])
def test_a_misspelt_objective_name_is_answered_with_the_closest_function(tmp_path, monkeypatch, name, line):
    monkeypatch.chdir(user_folder(tmp_path, "def objective(params, trial):\n    return 1.0\n"))
    with pytest.raises(hpo.HpoError) as error:
        hpo.prepare(name, "space.yaml")
    assert (error.value.argument, error.value.message) == ("objective", line)


def test_an_objective_named_by_the_space_is_blamed_on_the_space_file(tmp_path):
    """``objective: mines:objective`` where no module is: the error names the file's field, not a
    flag the user never gave."""
    folder = user_folder(tmp_path, "def objective(params, trial):\n    return 1.0\n",
                         SPACE + "objective: mines:objective\n")
    done = hpo_cli(folder, "search", "space.yaml")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "hpo: error: space.yaml: objective: cannot import 'mines': No module named 'mines'"]
    assert not (folder / ".hpo").exists()


def test_a_file_the_space_names_beside_it_is_said_to_be_there(tmp_path):
    """``objective: mine.py:objective`` in experiments/space.yaml, run from the folder above: the
    line said only 'file not found' of a file the user can see beside the space file."""
    (tmp_path / "experiments").mkdir()
    folder = user_folder(tmp_path / "experiments", "def objective(params, trial):\n    return 1.0\n",
                         SPACE + "objective: mine.py:objective\n")
    done = hpo_cli(tmp_path, "search", "experiments/space.yaml")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "hpo: error: experiments/space.yaml: objective: mine.py: file not found in the current folder; it is beside "
        "the space file: run from experiments, or name it with objective (--objective) "
        "'experiments/mine.py:objective'"]
    assert not (tmp_path / ".hpo").exists() and not (folder / ".hpo").exists()
    assert hpo_cli(folder, "search", "space.yaml", "--trials", "1").returncode == 0  # as the line says


HELPER = "def scale():\n    return 2.0\n"
USES_HELPER = """
from helper import scale


def objective(params, trial):
    print(f"trial {trial.number} scaled by {scale()}")
    return params["lr"] * scale()
"""


@pytest.mark.parametrize(("run_from", "objective", "where"), [
    (".", "experiments/mine.py:objective", ["--workers", "1"]),
    (".", "experiments/mine.py:objective", ["--workers", "2"]),
    (".", "experiments/mine.py:objective", ["--driver", "ray"]),
    ("experiments", "mine:objective", ["--workers", "2"]),
], ids=["file-in-process", "file-worker-pool", "file-ray", "module-worker-pool"])
def test_an_objective_imports_the_modules_beside_it_wherever_its_trials_run(tmp_path, run_from, objective, where):
    """``from helper import scale`` in mine.py, beside it: as ``python experiments/mine.py`` and
    ``python -m mine`` find it, in the search's process, its pool's workers and Ray's actors
    (whose path held only the current folder). Both ways of naming it said 'No module named'. What
    the trials print comes out of the search's process wherever they ran (an actor's went nowhere)."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "mine.py").write_text(USES_HELPER)
    (folder / "helper.py").write_text(HELPER)
    (tmp_path / "space.yaml").write_text("\n".join(line for line in SPACE.splitlines() if "weight_decay" not in line))
    done = hpo_cli(tmp_path / run_from, "search", str(tmp_path / "space.yaml"), "--objective", objective, *where,
                   "--strategy", "grid", "--trials", "4", "--population", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 trials (4 complete, 0 pruned, 0 failed)" in done.stdout
    assert "lr=0.0001\n" in done.stdout and "val_loss 0.0002\n" in done.stdout  # the grid's 4 points, 2 x lr: helper's
    assert sorted(line for line in done.stdout.splitlines() if "scaled by" in line) == [
        f"trial {number} scaled by 2.0" for number in range(4)]


def test_a_misspelt_key_is_named_as_written(tmp_path):
    folder = user_folder(tmp_path, "", SPACE.replace("high: 0.1,", "hihg: 0.1,"))
    done = hpo_cli(folder, "search", "space.yaml")
    assert last_line(done) == "hpo: error: space.yaml: parameter 'lr': unknown key 'hihg' (did you mean 'high'?)"


def test_api_errors_name_arguments_and_cli_errors_name_flags(tmp_path):
    with pytest.raises(hpo.HpoError) as error:
        hpo.prepare("digits_mlp", "lr_wd", n_trials=0)
    assert str(error.value) == "n_trials: must be at least 1, got 0"
    done = hpo_cli(tmp_path, "search", "lr_wd", "--trials", "0")
    assert last_line(done) == "hpo: error: --trials: must be at least 1, got 0"
    with pytest.raises(hpo.HpoError) as error:  # before: numpy's ValueError, with a traceback, from the strategy
        hpo.prepare("digits_mlp", "lr_wd", seed=-1)
    assert str(error.value) == "seed: must be at least 0, got -1"


def test_pruner_warm_up_comes_from_the_space_and_the_flags(tmp_path, stores, unique):
    space = hpo.load_space(user_folder(tmp_path, "", SPACE + "pruning: {warmup_steps: 4, warmup_trials: 2}\n")
                           / "space.yaml")
    from_space = hpo.prepare("digits_mlp", space, pruner="median", **stores).plan.pruning
    assert (from_space.pruner, from_space.warmup_steps, from_space.warmup_trials) == ("median", 4, 2)
    flagged = hpo.prepare("digits_mlp", space, pruner="median", warmup_steps=1, **stores).plan.pruning
    assert (flagged.warmup_steps, flagged.warmup_trials) == (1, 2)
    default = hpo.prepare("digits_mlp", "lr_wd", pruner="successive-halving", **stores).plan.pruning
    assert default.steps(25) == 5 and default.steps(5) == 2  # a fifth of the epochs, at least two
