"""GPU-only checks: they skip cleanly on a machine without CUDA (CI has none)."""

from __future__ import annotations

import pytest
import torch

import hpo

from conftest import digits_space

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_optuna_driver_trains_on_the_gpu(stores, unique, tmp_path):
    result = hpo.search("digits_mlp", digits_space(epochs=2), strategy="grid", n_trials=2, experiment=unique,
                        study_name=unique, home=tmp_path, **stores)
    assert {t.device for t in result.trials} == {"cuda"}
    assert result.count(hpo.TrialState.COMPLETE) == 2


def test_ray_driver_packs_fractional_gpu_trials(stores, unique, tmp_path):
    result = hpo.search("digits_mlp", digits_space(epochs=2), driver="ray", gpus_per_trial=0.25, strategy="grid",
                        n_trials=3, experiment=unique, study_name=unique, home=tmp_path,
                        tracking_uri=stores["tracking_uri"])
    assert {t.device for t in result.trials} == {"cuda"}
    assert result.count(hpo.TrialState.COMPLETE) == 3
