from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import hpo
from conftest import ROOT
from hpo import HpoError, load_space
from hpo._settings import SearchSettings
from hpo.cli import main
from hpo.spaces._space import seconds as in_seconds

GOOD = """
metric: val_loss
direction: minimize
objective: mnist1d_mlp
params:
  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  optimizer: {type: categorical, choices: [sgd, adam]}
  momentum: {type: float, low: 0.5, high: 0.99, condition: {optimizer: [sgd]}}
"""

# (what is wrong, the YAML body, text the one-line error must contain)
BAD_SPACES = [
    ("unknown key", GOOD.replace("log: true}", "log: true, scale: 2}"), "parameter 'lr': unknown key 'scale'"),
    ("unknown type", GOOD.replace("type: categorical", "type: choice"), "parameter 'optimizer': unknown type 'choice'"),
    ("low >= high", GOOD.replace("low: 1.0e-4, high: 0.1", "low: 0.1, high: 0.01"), "parameter 'lr': low (0.1) must be < high (0.01)"),
    ("log with low <= 0", GOOD.replace("low: 1.0e-4", "low: 0.0"), "parameter 'lr': log scale needs low > 0"),
    ("empty choices", GOOD.replace("[sgd, adam]", "[]"), "parameter 'optimizer': choices must list at least one value"),
    ("grid outside bounds", GOOD.replace("log: true}", "log: true, grid: [0.5]}"), "parameter 'lr': grid value 0.5 is outside"),
    ("high off the step's values", GOOD.replace("low: 1.0e-4, high: 0.1, log: true", "low: 0.0, high: 0.55, step: 0.1"), "parameter 'lr': high (0.55) is not low (0.0) plus a multiple of step (0.1): the last value would be 0.5"),
    ("int step with log", GOOD.replace("{type: float, low: 1.0e-4, high: 0.1, log: true}", "{type: int, low: 1, high: 9, step: 2, log: true}"), "parameter 'lr': step and log scale cannot be combined"),
    ("condition on itself", GOOD.replace("{optimizer: [sgd]}", "{momentum: [0.9]}"), "parameter 'momentum': condition on itself"),
    ("condition on unknown parameter", GOOD.replace("{optimizer: [sgd]}", "{solver: [sgd]}"), "parameter 'momentum': condition on unknown parameter 'solver'"),
    ("condition on unknown value", GOOD.replace("{optimizer: [sgd]}", "{optimizer: [lbfgs]}"), "parameter 'momentum': condition values ['lbfgs']"),
    ("unknown top-level key", GOOD + "budget: 3\n", "unknown key 'budget'"),
    ("a parameter outside params", GOOD + "wd: {type: float, low: 0.0, high: 0.1}\n", "unknown key 'wd' (a parameter: it goes under 'params')"),
    ("bad direction", GOOD.replace("minimize", "minimise"),  # was pydantic's "Input should be 'minimize' or ..."
     "field 'direction': unknown direction 'minimise' (did you mean 'minimize'? choose from minimize, maximize)"),
    ("unknown pruner", GOOD + "pruning: {pruner: medain}\n",
     "field 'pruning.pruner': unknown pruner 'medain' (did you mean 'median'? choose from none, median, "
     "successive-halving, hyperband)"),
    ("missing type", GOOD.replace("type: float, low: 1.0e-4", "low: 1.0e-4"), "parameter 'lr': missing 'type'"),
    ("a list of values", GOOD.replace("{type: categorical, choices: [sgd, adam]}", "[sgd, adam]"),
     "parameter 'optimizer': a list of values is not an entry: write optimizer: {type: categorical, choices: "
     "['sgd', 'adam']}"),  # was pydantic's "Input should be a valid dictionary or object to extract fields from"
    ("one value", GOOD.replace("{type: categorical, choices: [sgd, adam]}", "adam"),
     "parameter 'optimizer': one value is not searched: put it under 'fixed' (optimizer: 'adam')"),
    ("no params", GOOD.split("params:")[0], "field 'params': missing: the parameters to search, such as params: "
     "{lr: {type: float, low: 1.0e-4, high: 0.1, log: true}}"),  # was pydantic's "Field required"
    ("Ray Tune's mode", GOOD.replace("direction: minimize", "mode: min"),
     "unknown key 'mode' (Ray Tune's: write direction: minimize, or maximize)"),
    ("a direction cut short", GOOD.replace("direction: minimize", "direction: min"),
     "field 'direction': unknown direction 'min' (did you mean 'minimize'? choose from minimize, maximize)"),
    ("Ray Tune's name for a type", GOOD.replace("type: float, low: 1.0e-4", "type: loguniform, low: 1.0e-4"),
     "parameter 'lr': unknown type 'loguniform' (did you mean float with log: true? expected float, int or categorical)"),
    ("int bounds not integers", GOOD.replace("{type: float, low: 1.0e-4, high: 0.1, log: true}", "{type: int, low: 1.5, high: 4}"), "parameter 'lr'"),
    ("not yaml", "params: [unclosed", "not valid YAML"),
    ("not a mapping", "- 1\n- 2\n", "expected a mapping"),
]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(("case", "body", "message"), BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_bad_space_is_refused_naming_file_and_parameter(tmp_path, case, body, message):
    path = write(tmp_path, body)
    with pytest.raises(HpoError) as error:
        load_space(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(("case", "body", "message"), BAD_SPACES[:-2], ids=[c[0] for c in BAD_SPACES[:-2]])
def test_a_space_given_as_a_mapping_is_checked_as_its_file_would_be(tmp_path, case, body, message):
    """``hpo.search(objective, {...})``: the mapping a space file holds. Before, a traceback
    (``TypeError: expected str, bytes or os.PathLike object, not dict``)."""
    with pytest.raises(HpoError) as error:
        hpo.prepare(lambda params, trial: 0.0, yaml.safe_load(body), home=tmp_path)
    assert str(error.value).startswith("space: ") and message in str(error.value)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_space_mapping_runs_as_its_file_does_and_anything_else_is_refused_in_one_line(tmp_path):
    mapping = {"metric": "loss", "direction": "minimize", "params": {"lr": {"type": "float", "low": 0.1, "high": 1}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(mapping))
    given, read = (hpo.prepare(lambda params, trial: 0.0, space, home=tmp_path).plan.space
                   for space in (mapping, tmp_path / "space.yaml"))
    assert given.model_dump(exclude={"name"}) == read.model_dump(exclude={"name"})
    assert given.name == "space"
    with pytest.raises(HpoError) as error:
        hpo.prepare(lambda params, trial: 0.0, ["lr"], home=tmp_path / "other")
    assert str(error.value) == ("space: takes a space's name, a YAML path, a mapping as a space file holds or a "
                                "SearchSpace, got list")


def _tune_and_optuna_values():
    import optuna
    from ray import tune

    return [
        (tune.loguniform(1e-4, 0.1), "tune.loguniform is Ray Tune's: write lr: {type: float, low: 0.0001, high: 0.1, "
                                     "log: true}"),
        (tune.randint(1, 10), "tune.randint is Ray Tune's: write lr: {type: int, low: 1, high: 9}"),  # its high excluded
        (tune.qrandint(0, 10, 2), "tune.qrandint is Ray Tune's: write lr: {type: int, low: 0, high: 10, step: 2}"),
        (tune.quniform(0.0, 1.0, 0.1), "tune.quniform is Ray Tune's: write lr: {type: float, low: 0.0, high: 1.0, "
                                       "step: 0.1}"),
        (tune.choice(["adam", "sgd"]), "tune.choice is Ray Tune's: write lr: {type: categorical, choices: ['adam', "
                                       "'sgd']}"),
        (tune.grid_search([0.1, 0.01]), "tune.grid_search is Ray Tune's: write lr: {type: categorical, choices: [0.1, "
                                        "0.01]}"),
        (tune.randn(), "tune.randn is Ray Tune's: a space file gives each parameter bounds: write lr: {type: float, "
                       "low: ..., high: ...}"),
        (optuna.distributions.FloatDistribution(1e-5, 0.1, log=True), "optuna.distributions.FloatDistribution is "
         "Optuna's: write lr: {type: float, low: 1.0e-05, high: 0.1, log: true}"),
        (optuna.distributions.IntDistribution(16, 512, step=16), "optuna.distributions.IntDistribution is Optuna's: "
         "write lr: {type: int, low: 16, high: 512, step: 16}"),
    ]


def test_ray_tunes_and_optunas_parameters_are_answered_with_the_entry_that_says_the_same(tmp_path):
    """A Ray Tune ``param_space`` or Optuna's distributions, brought along: the entry to write,
    from their own values (was "unknown key 'lr'", or pydantic's "Input should be a valid
    dictionary"); the entries written are valid and the same distribution."""
    for value, said in _tune_and_optuna_values():
        with pytest.raises(HpoError) as error:
            hpo.prepare(lambda params, trial: 0.0, {"metric": "loss", "direction": "minimize", "params": {"lr": value}},
                        home=tmp_path)
        assert str(error.value) == f"space: parameter 'lr': {said}"
        if "..." not in said:
            hpo.SearchSpace.model_validate({"name": "s", "metric": "loss", "direction": "minimize",
                                            "params": yaml.safe_load(said.split("write ")[1])})
    with pytest.raises(HpoError) as error:  # the param_space itself given as the space
        hpo.prepare(lambda params, trial: 0.0, {"lr": _tune_and_optuna_values()[0][0]}, home=tmp_path)
    assert str(error.value) == ("space: 'lr' is a parameter, under 'params' beside the space's 'metric' and "
                                "'direction': tune.loguniform is Ray Tune's: write lr: {type: float, low: 0.0001, "
                                "high: 0.1, log: true}")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("case", "content"),
    [("latin-1 text", "metric: val_loss  # \u00e9chelle\n".encode("latin-1")), ("binary", bytes(range(256)) * 4)],
)
def test_a_file_that_is_not_utf8_text_is_refused_in_one_line(tmp_path, case, content):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(HpoError) as error:
        load_space(path)
    assert str(error.value) == f"{path}: not a text file (a space file is YAML in UTF-8)"


def test_cli_refuses_a_binary_space_file_with_exit_2(tmp_path):
    (tmp_path / "space.yaml").write_bytes(bytes(range(256)))
    done = subprocess.run([sys.executable, "-m", "hpo.cli", "search", "space.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["hpo: error: space.yaml: not a text file (a space file is YAML in UTF-8)"]


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(HpoError, match=r"nowhere\.yaml: search space file not found"):
        load_space(tmp_path / "nowhere.yaml")


def test_a_misspelt_space_name_is_answered_with_the_spaces_there_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "mine.yaml").write_text("metric: loss\nparams: {}\n")
    with pytest.raises(HpoError, match=r"^search_spaces/lr-wd\.yaml: search space file not found \(did you mean "
                       r"'lr_wd'\? spaces by name: batch_size, dropout, full, lr_wd, mine, optimizer\)$"):
        load_space("lr-wd")


@pytest.mark.parametrize("name", ["lr_wd", "dropout", "batch_size", "optimizer", "full"])
def test_bundled_spaces_load_and_their_grids_lie_inside(name):
    space = load_space(name)
    assert space.objective
    grid = space.grid()
    assert grid and all(space.contains(point) for point in grid)
    rng = np.random.default_rng(0)
    assert all(space.contains(space.sample(rng)) for _ in range(200))


def test_lr_wd_is_log_scaled_with_the_classic_coarse_grid():
    space = load_space("lr_wd")
    assert space.params["lr"].log and space.params["weight_decay"].log
    assert space.params["lr"].grid == [0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001]


def test_optimizer_space_offers_every_optimizer_and_momentum_only_where_it_applies():
    space = load_space("optimizer")
    assert set(space.params["optimizer"].choices) == {"sgd", "sgd_momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad"}
    for point in space.grid():
        assert ("momentum" in point) == (point["optimizer"] in ("sgd_momentum", "nesterov"))


def test_full_space_searches_all_five_together():
    assert {"lr", "weight_decay", "dropout", "batch_size", "optimizer"} <= set(load_space("full").params)


def test_int_bounds_are_inclusive_and_log_grid_is_spaced_on_log_scale(tmp_path):
    space = load_space(write(tmp_path, """
metric: m
direction: maximize
params:
  units: {type: int, low: 1, high: 3}
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, grid_points: 3}
"""))
    rng = np.random.default_rng(1)
    assert {space.sample(rng)["units"] for _ in range(300)} == {1, 2, 3}
    assert sorted({p["lr"] for p in space.grid()}) == [1e-4, 1e-3, 1e-2]


def test_cli_refuses_a_bad_space_with_one_line_exit_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, GOOD.replace("low: 1.0e-4, high: 0.1", "low: 0.1, high: 0.01"))
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "search", str(path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0] == f"hpo: error: {path}: parameter 'lr': low (0.1) must be < high (0.01)"
    assert not (tmp_path / ".hpo").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "bayes"], "--strategy: unknown strategy 'bayes'"),
        (["--pruner", "asha2"], "--pruner: unknown pruner 'asha2'"),
        (["--objective", "resnet"], "--objective: unknown objective 'resnet'"),
        (["--objective", "nowhere.py:f"], "--objective: nowhere.py: file not found"),
        (["--trials", "0"], "--trials: must be at least 1"),
        (["--trials", "many"], "--trials: 'many' is not a valid integer"),
        (["--timeout", "5x"], "--timeout: expected seconds or a duration like 90s, 30m, 2h or 1h30m, got '5x'"),
        (["--trial-timeout", "1h30"], "--trial-timeout: expected seconds or a duration like 90s, 30m, 2h or 1h30m"),
        (["--timeout", "0m"], "--timeout: must be more than 0 seconds, got 0.0"),
        (["--trial-timeout", "inf"], "--trial-timeout: expected a finite number of seconds, got inf"),
        (["--driver", "dask"], "--driver: unknown driver 'dask'"),
        (["--pruner", "medain"], "--pruner: unknown pruner 'medain' (did you mean 'median'? choose from none, median,"),
        (["--strategy", "coarse_to_fine"], "--strategy: unknown strategy 'coarse_to_fine' (did you mean 'coarse-to-fine'?"),
        (["--driver", "rey"], "--driver: unknown driver 'rey' (did you mean 'ray'? choose from optuna, ray)"),
        (["--objective", "mnist1d-mlp"], "--objective: unknown objective 'mnist1d-mlp' (did you mean 'mnist1d_mlp'? built-in:"),
        (["--storage", "optuna.db"], "--storage: 'optuna.db' is not a database URL"),
    ],
)
def test_cli_refuses_bad_flags_before_writing_anything(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hpo", "search", str(ROOT / "search_spaces" / "lr_wd.yaml"), *flags])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hpo: error: {message}")
    assert not (tmp_path / ".hpo").exists()


@pytest.mark.parametrize(("given", "seconds"), [
    ("600", 600.0), (" 90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0), ("1h 30min", 5400.0),
    ("1.5d", 129600.0), ("2H", 7200.0), (45, 45), (0.5, 0.5),
])
def test_a_time_is_taken_in_seconds_or_in_units_as_people_write_it(given, seconds):
    """``--timeout 2h`` was refused (``'2h' is not a valid float``)."""
    assert in_seconds(given) == seconds
    assert SearchSettings.of(timeout=given, trial_timeout=given).timeout == seconds
    space = hpo.SearchSpace.model_validate({"name": "s", "metric": "loss", "direction": "minimize", "timeout": given,
                                            "params": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}})
    assert space.timeout == seconds


@pytest.mark.parametrize(("metric", "direction", "wanted"), [
    ("val_accuracy", "minimize", "maximize"), ("f1_macro", "minimize", "maximize"), ("mAP", "minimize", "maximize"),
    ("val_loss", "maximize", "minimize"), ("test_error_rate", "maximize", "minimize"),
    ("val_accuracy", "maximize", None), ("val_loss", "minimize", None),
    ("neg_loss", "maximize", None), ("score", "minimize", None), ("accuracy_loss", "minimize", None),
])
def test_a_metric_whose_name_says_the_other_direction_is_warned_of_before_the_first_trial(tmp_path, metric,
                                                                                            direction, wanted):
    """The name says which way is better; where it says the other way, or says nothing
    (``score``), or both (``accuracy_loss``), or is negated (``neg_loss``), nothing is said."""
    space = hpo.SearchSpace.model_validate({"name": "s", "metric": metric, "direction": direction,
                                            "params": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}})
    warnings = hpo.prepare(lambda params, trial: 0.0, space, home=tmp_path).warnings
    doubts = [w for w in warnings if "ranks the worst trials first" in w]
    assert doubts == ([f"s: metric {metric!r} is {direction}d, which ranks the worst trials first: did you mean "
                       f"direction: {wanted}?"] if wanted else [])


def test_the_widest_configuration_takes_every_number_at_its_high_end_and_keeps_conditions():
    space = hpo.SearchSpace.model_validate({
        "name": "wide", "metric": "val_loss", "direction": "minimize",
        "params": {"optimizer": {"type": "categorical", "choices": ["adam", "sgd_momentum"]},
                   "momentum": {"type": "float", "low": 0.5, "high": 0.99, "condition": {"optimizer": ["sgd_momentum"]}},
                   "batch_size": {"type": "categorical", "choices": [64, 256, 32]},
                   "hidden": {"type": "int", "low": 8, "high": 130, "step": 2},
                   "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}})
    assert space.widest() == {"optimizer": "adam", "batch_size": 256, "hidden": 130, "lr": 0.1}
    assert space.contains(space.widest())
