"""GPU-only checks: they skip cleanly on a machine without CUDA (CI has none)."""

from __future__ import annotations

import time

import optuna
import pytest
import torch

import hpo
from conftest import digits_space
from hpo.store import claimed_by
from objectives import digits_mlp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_optuna_driver_trains_on_the_gpu_in_process(stores, unique, tmp_path):
    result = hpo.search("digits_mlp", digits_space(epochs=2), strategy="grid", n_trials=2, driver=hpo.OptunaOptions(workers=1),
                        experiment=unique, study_name=unique, home=tmp_path, **stores)
    assert {t.device for t in result.trials} == {"cuda:0"}
    assert result.count(hpo.TrialState.COMPLETE) == 2


class SlowWarmDigits:
    """digits_mlp with its data put on the GPU once per worker, and trials long enough for
    both workers to draw some."""

    def setup(self, device):
        return digits_mlp.setup(device)

    def __call__(self, params, trial):
        assert trial.context.x_train.device.type == "cuda"  # warm: the worker's data, on its GPU
        time.sleep(1.0)
        return digits_mlp(params, trial)


def test_warm_workers_share_one_gpu(stores, unique, tmp_path):
    space = digits_space(epochs=2, lr={"type": "float", "low": 1e-4, "high": 0.05, "log": True,
                                       "grid": [1e-3, 3e-3, 1e-2, 3e-2]})
    result = hpo.search(SlowWarmDigits(), space, strategy="grid", n_trials=4,
                        driver=hpo.OptunaOptions(gpus="0", trials_per_gpu=2),
                        experiment=unique, study_name=unique, home=tmp_path, evaluate_test=False, **stores)
    assert {t.device for t in result.trials} == {"cuda:0"}  # each worker sees its one GPU as cuda:0
    study = optuna.load_study(study_name=unique, storage=stores["storage"])
    assert len({claimed_by(t) for t in study.trials}) == 2  # two worker processes on the one GPU
    assert result.count(hpo.TrialState.COMPLETE) == 4


def out_of_memory_on_large_batches(params, trial):
    if params["batch_size"] > 64:
        held = torch.empty(256 << 20, dtype=torch.uint8, device=trial.device)  # cached once freed
        torch.empty(1 << 50, dtype=torch.uint8, device=trial.device)  # a petabyte: a real CUDA OOM
        del held
    return {"val_loss": 1.0 / params["batch_size"]}


def test_a_real_out_of_memory_error_fails_the_trial_and_frees_the_gpu(stores, unique, tmp_path):
    space = hpo.SearchSpace.model_validate(
        {"name": "oom", "metric": "val_loss", "direction": "minimize",
         "params": {"batch_size": {"type": "int", "low": 32, "high": 128, "grid": [32, 128]}}})
    torch.cuda.init()
    reserved = torch.cuda.memory_reserved()
    result = hpo.search(out_of_memory_on_large_batches, space, strategy="grid", n_trials=2, driver=hpo.OptunaOptions(workers=1),
                        experiment=unique, study_name=unique, home=tmp_path, evaluate_test=False, **stores)
    outcomes = sorted((t.params["batch_size"], t.state.value, t.reason) for t in result.trials)
    assert outcomes == [(32, "complete", ""), (128, "failed", "cuda_oom")]
    assert torch.cuda.memory_reserved() <= reserved  # the trial's cached blocks went back to the GPU


def test_ray_driver_packs_fractional_gpu_trials(stores, unique, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed here (bench/gpu_session.sh ships no Ray wheel)")
    result = hpo.search("digits_mlp", digits_space(epochs=2), driver=hpo.RayOptions(gpus_per_trial=0.25), strategy="grid",
                        n_trials=3, experiment=unique, study_name=unique, home=tmp_path,
                        tracking_uri=stores["tracking_uri"])
    assert {t.device for t in result.trials} == {"cuda:0"}  # Ray pins each actor to its GPU share
    assert result.count(hpo.TrialState.COMPLETE) == 3


def test_auto_population_on_a_gpu_fills_it_with_many_members(stores, unique, tmp_path):
    from hpo.population import auto_size

    recipe = digits_mlp.population({}, hpo.Trial(0, seed=0, device="cuda:0", context=digits_mlp.setup("cuda:0")))
    assert 32 < auto_size(recipe, {}, "cuda:0") <= 1024
    space = digits_space(epochs=2, lr={"type": "float", "low": 1e-4, "high": 0.05, "log": True, "grid_points": 40})
    result = hpo.search("digits_mlp", space, strategy="grid", n_trials=40, population="auto",
                        driver=hpo.OptunaOptions(workers=1), experiment=unique, study_name=unique, home=tmp_path,
                        evaluate_test=False, **stores)
    assert {t.device for t in result.trials} == {"cuda:0"} and result.count(hpo.TrialState.COMPLETE) == 40


def test_a_population_on_the_gpu_follows_its_members_trained_alone():
    from hpo.population import train_population

    params = [{"lr": lr, "epochs": 3, "dropout": 0.0, "batch_size": 128} for lr in (1e-3, 3e-3, 1e-2)]
    context = digits_mlp.setup("cuda:0")
    alone, together = [], [[] for _ in params]
    for number, p in enumerate(params):
        curve: list = []
        digits_mlp(p, hpo.Trial(number, seed=number, device="cuda:0", context=context,
                                on_report=lambda s, m, curve=curve: curve.append(m["val_loss"])))
        alone.append(curve)
    trials = [hpo.Trial(n, seed=n, device="cuda:0", context=context, on_report=lambda s, m, c=c: c.append(m["val_loss"]))
              for n, c in enumerate(together)]
    train_population(digits_mlp.population(params[0], trials[0]), list(zip(params, trials, strict=True)), "val_loss")
    for solo, member in zip(alone, together, strict=True):
        assert member == pytest.approx(solo, rel=1e-3)  # CUDA kernels sum in their own order
