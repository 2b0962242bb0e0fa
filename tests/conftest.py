from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpo import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
# Every Ray instance of the tests (the local one, the two-node cluster) stays on loopback.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST-1D is generated once per test session, not once per test."""
    path = tmp_path_factory.mktemp("data")
    os.environ["HPO_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One real MLflow SQLite store and one real Optuna SQLite storage for the session."""
    path = tmp_path_factory.mktemp("stores")
    return {"tracking_uri": f"sqlite:///{path / 'mlflow.db'}", "storage": f"sqlite:///{path / 'optuna.db'}"}


@pytest.fixture
def unique() -> str:
    """A fresh experiment / study name, so tests can share the session stores."""
    return f"t{next(_names)}"


def child_runs(tracking_uri: str, parent_run_id: str) -> list:
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=1000
    )


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
