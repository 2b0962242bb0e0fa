"""Real data that needs no download, split train / validation / test with stratification."""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0  # the same validation set for every trial, so trials compare fairly
VALIDATION_SHARE = 0.2


@dataclass(frozen=True)
class Splits:
    """Tensors of one dataset on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def _cache_dir() -> Path:
    return Path(os.environ.get("HPO_DATA_DIR", ".hpo/data"))


def _save_whole(path: Path, **arrays: np.ndarray) -> None:
    """``arrays`` as ``path`` (.npz), which readers see whole or not at all, even with several
    processes writing it at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **arrays)
    Path(tmp.name).replace(path)


def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D generated locally (4000 train, 1000 test, length 40)."""
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], 20% held out as the test set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=0.2, stratify=y, random_state=SPLIT_SEED
    )
    return x_train, y_train, x_test, y_test


LOADERS = {"mnist1d": _mnist1d_arrays, "digits": _digits_arrays}
SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def split_arrays(name: str) -> dict[str, np.ndarray]:
    """A dataset's train / validation / test arrays, made once and cached as .npz: a process that
    trains on it later reads them without importing scikit-learn (a second per worker)."""
    path = _cache_dir() / f"{name}-splits.npz"
    if not path.exists():
        from sklearn.model_selection import train_test_split

        x, y, x_test, y_test = LOADERS[name]()
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=VALIDATION_SHARE, stratify=y, random_state=SPLIT_SEED
        )
        _save_whole(path, **dict(zip(SPLITS, (x_train, y_train, x_val, y_val, x_test, y_test), strict=True)))
    with np.load(path) as data:
        return {key: data[key] for key in SPLITS}


def load_splits(name: str, device: str = "cpu") -> Splits:
    """A dataset as tensors on ``device``, with a stratified validation split of the training set;
    its features in torch's default dtype (float32 unless a caller chose another)."""
    return _splits(name, device, torch.get_default_dtype())


@functools.lru_cache(maxsize=8)
def _splits(name: str, device: str, dtype: torch.dtype) -> Splits:
    arrays = split_arrays(name)

    def features(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.long, device=device)

    return Splits(
        *(features(arrays[key]) if key.startswith("x") else labels(arrays[key]) for key in SPLITS),
        n_classes=int(max(np.max(arrays[key]) for key in ("y_train", "y_val", "y_test"))) + 1,
    )
