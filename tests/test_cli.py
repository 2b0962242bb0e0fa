"""The command a user types, end to end in a fresh folder."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from mlflow import MlflowClient

import hpo
from conftest import ROOT, child_runs, digits_space

SPACE = """
metric: val_loss
direction: minimize
objective: digits_mlp
params:
  lr: {type: float, low: 1.0e-4, high: 0.05, log: true, grid: [0.001, 0.003, 0.01]}
fixed: {epochs: 2}
"""


def test_search_command_prints_progress_leaderboard_best_and_test_score(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPACE)
    hpo_bin = Path(sys.executable).with_name("hpo")
    done = subprocess.run(
        [str(hpo_bin), "search", "tiny.yaml", "--strategy", "grid", "--trials", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr and "3 complete" in done.stderr  # the progress bar
    assert "Leaderboard (minimize val_loss)" in done.stdout
    assert "Best trial" in done.stdout and "test (evaluated once): loss" in done.stdout
    assert (tmp_path / ".hpo" / "mlflow.db").exists() and (tmp_path / ".hpo" / "optuna.db").exists()
    again = subprocess.run(
        [str(hpo_bin), "search", "tiny.yaml", "--strategy", "grid", "--trials", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and "tiny-digits_mlp-grid-seed0: 3 trials" in again.stdout  # resumed, nothing added
    listed = subprocess.run([str(hpo_bin), "studies"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "tiny-digits_mlp-grid-seed0" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:5] == [
        "tiny-digits_mlp-grid-seed0", "tiny", "grid", "3/3", "3 complete, 0 pruned, 0 failed"]
    assert f"val_loss {hpo.studies(home=tmp_path / '.hpo')[0].best:.4g}" in row
    # A worker beside it on this machine: the study as the argument, the store the default (they were two
    # required flags: `hpo worker STUDY` said only "Missing option '--study'").
    joined = subprocess.run([str(hpo_bin), "worker", "tiny-digits_mlp-grid-seed0"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert joined.returncode == 0, joined.stderr
    assert "hpo worker: ran 0 trials of 'tiny-digits_mlp-grid-seed0'; the budget is claimed" in joined.stderr
    unnamed = subprocess.run([str(hpo_bin), "worker"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (unnamed.returncode, unnamed.stderr) == (2, "hpo: error: hpo worker STUDY: name the study of a running "
                                                       "search (hpo studies lists them)\n")


def test_studies_lists_each_search_as_its_last_run_counted_it(stores, unique, tmp_path):
    """A study whose budget is partly run, with a failure its rerun would retry; and no study is
    one line naming the storage."""
    from hpo.drivers.simulated import SimulatedOptions

    with pytest.raises(hpo.HpoError, match=r"^storage: no study in sqlite:///.*: run a search first$"):
        hpo.studies(home=tmp_path)

    def sometimes(params, trial):
        if params["lr"] == 0.01:
            raise ValueError("not this one")
        return params["lr"]

    for n_trials in (2, 3):  # the second run grows the budget
        hpo.search(sometimes, digits_space(epochs=1), strategy="grid", n_trials=n_trials,
                   driver=SimulatedOptions(workers=1), study_name=unique, experiment=unique, evaluate_test=False,
                   quiet=True, home=tmp_path, **stores)
    (study,) = [s for s in hpo.studies(stores["storage"]) if s.name == unique]
    states = sorted(t.state.value for t in study.counted)
    assert study.plan["n_trials"] == 3 and len(study.counted) == 3, states
    assert states.count("failed") == 1 and study.best == min(t.value for t in study.counted if t.state.value == "complete")
    assert study.last is not None
    assert repr(study) == f"<StudySummary {unique!r}: 3 of 3 trials (2 complete, 0 pruned, 1 failed); best {study.best:.4g}>"


def test_a_tracking_server_over_http_gets_the_same_layout(mlflow_server, stores, unique):
    result = hpo.search("digits_mlp", digits_space(epochs=1), strategy="grid", n_trials=2, experiment=unique,
                        tracking_uri=mlflow_server, storage=stores["storage"], study_name=unique)
    runs = child_runs(mlflow_server, result.parent_run_id)
    assert sorted(int(r.data.tags["hpo.trial_number"]) for r in runs) == [0, 1]
    assert all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(mlflow_server)
    assert "best_config.json" in {a.path for a in client.list_artifacts(result.parent_run_id)}


def test_every_setting_is_a_flag_of_the_command_with_the_same_default_and_help():
    from hpo.cli import search as command

    options = {param.name: param for param in command.params if isinstance(param, click.Option)}
    fields = hpo.SearchSettings.model_fields
    for name, flag in hpo.SearchSettings.flags().items():
        assert flag in options[name].opts, name
        assert options[name].default == fields[name].default, name
        assert options[name].help.startswith(fields[name].description), name
    assert "home" not in options  # the API's alone
    assert (options["strategy"].default, options["n_trials"].default) == ("auto", 40)


def test_a_misspelt_keyword_names_the_setting_it_meant_and_writes_nothing(tmp_path):
    with pytest.raises(hpo.HpoError) as error:
        hpo.search(lambda params, trial: 0.0, "lr_wd", n_trails=3, home=tmp_path / ".hpo")
    assert str(error.value) == "unexpected keyword argument 'n_trails'; did you mean 'n_trials'?"
    assert not (tmp_path / ".hpo").exists()


@pytest.mark.parametrize(("given", "said"), [
    ({"workers": 4}, "an option of the optuna driver: driver=hpo.OptunaOptions(workers=4)"),
    ({"ray_address": "head:6379"}, "an option of the ray driver: driver=hpo.RayOptions(address='head:6379')"),
    ({"gpus_per_trial": 0.25}, "an option of the ray driver: driver=hpo.RayOptions(gpus_per_trial=0.25)"),
    ({"study": "mine"}, "the flag --study is study_name='mine' here"),  # was: did you mean 'new_study'?
    ({"trials": 10}, "the flag --trials is n_trials=10 here"),
    ({"test": False}, "the flag --test is evaluate_test=False here"),
])
def test_a_flags_name_given_as_a_keyword_says_where_it_goes(given, said, tmp_path):
    """The command's flags (--workers, --ray-address) are the engines' options in the API, and some
    are named otherwise there (--study is study_name); before, such a keyword was only 'unexpected'."""
    with pytest.raises(hpo.HpoError) as error:
        hpo.search(lambda params, trial: 0.0, "lr_wd", home=tmp_path / ".hpo", **given)
    assert str(error.value) == f"unexpected keyword argument {next(iter(given))!r}: {said}"
    assert not (tmp_path / ".hpo").exists()


@pytest.mark.parametrize(("made", "said"), [
    (lambda: hpo.RayOptions(max_concurrent=0), "max_concurrent: must be more than 0, got 0"),
    (lambda: hpo.RayOptions(gpus_per_trial=-1), "gpus_per_trial: must be at least 0, got -1"),
    (lambda: hpo.RayOptions(cpus_per_trial="many"), "cpus_per_trial: must be a number, got many"),
    (lambda: hpo.OptunaOptions(wokers=2), "OptunaOptions: unexpected keyword argument 'wokers' (did you mean "
                                          "'workers'? its arguments: workers, gpus, trials_per_gpu)"),
    (lambda: hpo.Pruning(pruner="medain"), "pruner: unknown pruner 'medain' (did you mean 'median'? choose from none, "
                                           "median, successive-halving, hyperband)"),
    (lambda: hpo.Pruning(warmup_steps=-1), "warmup_steps: must be at least 0, got -1"),
])
def test_the_apis_option_objects_refuse_a_mistake_in_one_line_naming_the_option(made, said):
    """Before, pydantic's ValidationError of four lines, with a link, where every other mistake of
    the API is one ``HpoError``; the command said ``Input should be greater than 0``."""
    with pytest.raises(hpo.HpoError) as error:
        made()
    assert str(error.value) == said


def test_an_engines_flag_is_refused_in_hpos_words(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hpo.cli", "search", "lr_wd", "--driver", "ray", "--max-concurrent",
                           "0"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2, ["hpo: error: --max-concurrent: must be more than 0, got 0"])
    assert not (tmp_path / ".hpo").exists()


def test_the_default_strategy_is_coarse_to_fine_for_two_parameters_and_tpe_for_more(tmp_path):
    """What the benchmarks found (docs/benchmarks.md): coarse-to-fine led on learning rate and
    weight decay, TPE on the public tables' three to nine parameters. The study is named after
    the strategy that runs, so ``lr_wd``'s default study is the one it always was."""
    lr_wd, full = (hpo.prepare("mnist1d_mlp", name, home=tmp_path).plan for name in ("lr_wd", "full"))
    assert (lr_wd.strategy.name, full.strategy.name) == ("coarse-to-fine", "tpe")
    assert (lr_wd.study_name, full.study_name) == ("lr_wd-mnist1d_mlp-coarse-to-fine-seed0", "full-mnist1d_mlp-tpe-seed0")
    assert not (tmp_path / "optuna.db").exists()  # prepared, nothing written yet


def test_a_summary_sent_to_a_file_or_a_pipe_keeps_every_column_and_line_whole(stores, unique, tmp_path):
    """Rich fits what is not a terminal to 80 columns: a wide leaderboard came out as 'tri…'."""
    import io

    from rich.console import Console

    from hpo.drivers.simulated import SimulatedOptions
    from hpo.reporting._terminal import print_summary

    names = ["learning_rate", "weight_decay", "dropout_rate", "momentum_term", "label_smoothing", "warmup_fraction"]
    space = hpo.SearchSpace.model_validate({
        "name": "wide", "metric": "validation_loss", "direction": "minimize",
        "params": {name: {"type": "float", "low": 0.001, "high": 0.9} for name in names}})
    result = hpo.search(lambda params, trial: sum(params.values()), space, strategy="random", n_trials=3,
                        driver=SimulatedOptions(workers=1), study_name=f"{unique}-a-study-name-long-enough-to-wrap",
                        experiment=unique, evaluate_test=False, quiet=True, home=tmp_path, **stores)
    out = io.StringIO()
    print_summary(result, Console(file=out))
    printed = out.getvalue()
    assert "…" not in printed and max(len(line) for line in printed.splitlines()) > 80
    assert f"{result.study_name}: 3 trials (3 complete, 0 pruned, 0 failed)" in printed.splitlines()
    header = next(line for line in printed.splitlines() if "learning_rate" in line)
    assert all(name in header for name in names)
    assert " stage " not in header  # one stage: a column of zeros says nothing
    out = io.StringIO()
    print_summary(dataclasses.replace(result, trials=[dataclasses.replace(t, stage=t.number % 2) for t in result.trials]),
                  Console(file=out))
    assert " stage " in next(line for line in out.getvalue().splitlines() if "learning_rate" in line)


def test_a_search_that_completed_no_trial_says_how_they_ended_and_what_divergence_means(stores, unique, tmp_path):
    """Before: 'No trial completed: see the reasons in MLflow', whatever they were."""
    import io

    from rich.console import Console

    from hpo import TrialRecord, TrialState
    from hpo.reporting._terminal import print_summary, why_none_completed

    def explodes(params, trial):
        trial.report(1, loss=float("nan"))
        return 0.0

    space = hpo.SearchSpace.model_validate({"name": "s", "metric": "loss", "direction": "minimize",
                                            "params": {"lr": {"type": "float", "low": 10.0, "high": 100.0}}})
    result = hpo.search(explodes, space, strategy="random", n_trials=3, study_name=unique, experiment=unique,
                        evaluate_test=False, quiet=True, home=tmp_path, **stores)
    out = io.StringIO()
    print_summary(result, Console(file=out))
    assert ("No trial completed: 3 diverged. A loss that turns NaN or explodes says the learning rate is too high: "
            "lower the top of its range. Each trial's reason is its MLflow run's tag hpo.reason.") in out.getvalue()
    mixed = [TrialRecord(0, {}, TrialState.PRUNED, reason="median"), TrialRecord(1, {}, TrialState.PRUNED,
             reason="diverged"), TrialRecord(2, {}, TrialState.FAILED, reason="ValueError: [bad] input"),
             TrialRecord(3, {}, TrialState.PRUNED, reason="median")]
    assert why_none_completed(mixed) == ("2 pruned by median; 1 diverged; 1 failed: ValueError: [bad] input. Each "
                                         "trial's reason is its MLflow run's tag hpo.reason.")


def test_resuming_counts_a_trial_left_running_apart_from_those_done():
    """A trial left running by a process that stopped was counted as done, beside counts that
    did not add up to it (``2 of its 8 trials done (1 complete, 0 pruned, 0 failed)``)."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from hpo import TrialRecord, TrialState
    from hpo.reporting._terminal import ProgressBar

    console = Console(file=io.StringIO(), width=400)
    with Progress(console=console) as progress:
        bar = ProgressBar(progress, 8, "val_loss", "minimize", study="s")
        bar.resumed([TrialRecord(0, {"lr": 0.1}, TrialState.COMPLETE, 0.5), TrialRecord(1, {"lr": 0.2},
                                                                                        TrialState.RUNNING)])
    assert ("Resuming study 's': 1 of its 8 trials done (1 complete, 0 pruned, 0 failed), 1 running elsewhere or "
            "left by a process that stopped (run again); --new-study starts a fresh one") in console.file.getvalue()
    assert progress.tasks[0].completed == 1


@pytest.mark.parametrize("command", [["studies"], ["report"], ["worker", "--study", "s"]])
def test_a_storage_that_cannot_be_reached_is_one_line_for_every_command(command, tmp_path):
    """`hpo report` and `hpo worker` read the storage's study names first, and an unreachable
    PostgreSQL server came out as psycopg's traceback."""
    url = "postgresql+psycopg://nobody@127.0.0.1:1/hpo"  # nothing listens on port 1
    done = subprocess.run([str(Path(sys.executable).with_name("hpo")), *command, "--storage", url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"hpo: error: --storage: cannot open {url}: OperationalError: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_progress_line_fits_an_80_column_terminal_by_narrowing_its_bar_never_its_counts():
    """On an 80-column terminal the line of a 2000-trial search cut its count to ``1222/2…``
    and its elapsed time to ``0:0…`` to keep Rich's bar at 40 columns."""
    import io

    from rich.console import Console

    from hpo import TrialRecord, TrialState
    from hpo.reporting._terminal import progress_shown

    space = {"metric": "val_accuracy", "direction": "maximize",
             "params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}}
    plan = hpo.prepare(lambda params, trial: 0.5, space, n_trials=2000).plan
    lines = {}
    for width in (80, 120):
        console = Console(file=io.StringIO(), width=width)
        with progress_shown(plan, console) as bar:
            bar.resumed([])  # the search's stores open: the line is drawn
            for number in range(1222):
                state = TrialState.PRUNED if number % 25 == 0 else TrialState.FAILED if number % 100 == 1 else \
                    TrialState.COMPLETE
                bar.trial_finished(TrialRecord(number, {"lr": 0.01}, state, 0.9876 if number == 7 else 0.5))
        (lines[width],) = console.file.getvalue().splitlines()
    assert len(lines[80]) <= 80 and " 1222/2000 " in lines[80] and lines[80].endswith(" 0:00:00")
    assert "1160 complete 49 pruned 13 failed  best val_accuracy" in lines[80]
    assert lines[120].split("━")[0] == "search " and "best val_accuracy 0.9876 0:00:00" in lines[120]
    assert lines[120].count("━") + lines[120].count("╸") <= 40  # Rich's bar, where there is room for it


def test_new_study_and_keep_study_together_are_refused_in_one_line(tmp_path):
    """Both were taken, and the search quietly started a fresh study."""
    with pytest.raises(hpo.HpoError) as refused:
        hpo.prepare("digits_mlp", "lr_wd", new_study=True, keep_study=True)
    assert str(refused.value) == ("keep_study: resumes the study, and new_study (--new-study) starts a fresh one: "
                                  "give one of them")
    done = subprocess.run([str(Path(sys.executable).with_name("hpo")), "search", "lr_wd", "--new-study",
                           "--keep-study"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "hpo: error: --keep-study: resumes the study, and new_study (--new-study) starts a fresh one: give one of them"]
    assert not (tmp_path / ".hpo").exists()


def test_make_refuses_a_misspelt_variable_in_one_line_and_passes_others_on():
    """``make search TRIAL=10`` ran the default 40 trials, without a word."""

    def make(*args):
        return subprocess.run(["make", "-n", "-o", ".venv/.installed", "search", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    misspelt = make("TRIAL=10")
    assert misspelt.returncode == 2
    (line,) = misspelt.stderr.strip().splitlines()
    assert re.fullmatch(r"Makefile:\d+: \*\*\* TRIAL is not a variable of this Makefile \(did you mean TRIALS\?\)\.  Stop\.",
                        line), line
    passed_on = make("TRIALS=10", "OMP_NUM_THREADS=2")  # an environment variable for the tools
    assert passed_on.returncode == 0 and "--trials 10" in passed_on.stdout
