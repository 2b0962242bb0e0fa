from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hpo import Trial, TrialPruned
from objectives import OBJECTIVES, digits_mlp
from objectives._data import load_splits
from objectives._training import OPTIMIZERS, make_optimizer


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_builtin_objective_trains_on_real_data_and_reports_every_epoch(name):
    reports = []
    trial = Trial(0, seed=0, device="cpu", metric="val_loss", on_report=lambda s, m: reports.append((s, m)))
    metrics = OBJECTIVES[name]({"epochs": 3, "lr": 3e-3}, trial)
    assert [step for step, _ in reports] == [0, 1, 2, 3]  # the untrained model, then each epoch
    assert all({"train_loss", "val_loss", "val_accuracy"} <= set(m) for _, m in reports)
    assert reports[0][1]["val_loss"] == pytest.approx(2.3, abs=0.3)  # about log(10) untrained
    assert reports[-1][1]["val_loss"] < reports[0][1]["val_loss"]  # it learns
    assert metrics["val_accuracy"] > 0.2  # better than 10 classes' chance
    assert metrics["val_loss"] == min(m["val_loss"] for _, m in reports[1:])  # the best epoch is kept


def test_same_seed_gives_the_same_result():
    first = digits_mlp({"epochs": 2}, Trial(0, seed=42))
    second = digits_mlp({"epochs": 2}, Trial(1, seed=42))
    assert first == second


def test_early_stopping_with_patience_stops_a_stalled_run():
    reports = []
    trial = Trial(0, seed=0, on_report=lambda s, m: reports.append(s))
    metrics = digits_mlp({"epochs": 40, "lr": 1e-9, "patience": 2, "optimizer": "sgd"}, trial)
    assert len(reports) < 41 and metrics["epochs"] == len(reports) - 1


def test_a_huge_learning_rate_is_stopped_by_the_guard():
    from hpo.trial import DivergenceGuard

    trial = Trial(0, seed=0, metric="val_loss", guard=DivergenceGuard())
    with pytest.raises(TrialPruned, match="diverged"):
        digits_mlp({"epochs": 5, "lr": 50.0, "optimizer": "sgd_momentum"}, trial)


def test_validation_split_is_stratified_and_disjoint_from_test():
    splits = load_splits("mnist1d")
    assert len(splits.y_train) == 3200 and len(splits.y_val) == 800 and len(splits.y_test) == 1000
    counts = splits.y_val.bincount(minlength=10).float() / len(splits.y_val)
    overall = splits.y_train.bincount(minlength=10).float() / len(splits.y_train)
    assert (counts - overall).abs().max() < 0.01


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_is_built(name):
    import torch

    weights = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = make_optimizer({"optimizer": name, "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9}, weights)
    assert optimizer.param_groups[0]["lr"] == 0.1
    if name == "nesterov":
        assert optimizer.param_groups[0]["nesterov"]


def test_test_score_uses_the_test_set():
    scores = digits_mlp.test({"epochs": 3, "lr": 3e-3}, Trial(0, seed=0))
    assert set(scores) == {"loss", "accuracy"} and 0.5 < scores["accuracy"] <= 1.0


def test_objectives_import_neither_optuna_nor_ray():
    code = "import sys, objectives; print('optuna' in sys.modules, 'ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_later_process_reads_the_cached_splits_without_scikit_learn(tmp_path):
    """Pool workers and Ray actors load the data that the first process split: the same arrays,
    without importing scikit-learn (a second each)."""
    code = ("import sys, json; from objectives._data import load_splits; s = load_splits('digits'); "
            "print(json.dumps([s.y_val.tolist(), 'sklearn' in sys.modules]))")
    env = {**os.environ, "HPO_DATA_DIR": str(tmp_path)}

    def load() -> list:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        return json.loads(done.stdout)

    first_val, first_imported = load()
    later_val, later_imported = load()
    assert first_imported and not later_imported
    assert later_val == first_val and len(later_val) > 100
