"""Models for the built-in objectives, built from the trial's parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from objectives._data import Splits


def build_mlp(params: Mapping[str, Any], splits: Splits) -> nn.Module:
    """Two hidden ReLU layers (``hidden`` units, 100 by default), dropout after each."""
    hidden, dropout = int(params.get("hidden", 100)), float(params["dropout"])
    return nn.Sequential(
        nn.Linear(splits.n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, splits.n_classes),
    )


def build_cnn1d(params: Mapping[str, Any], splits: Splits) -> nn.Module:
    """Three strided 1-D convolutions (``channels``, 32 by default), dropout, a linear head."""
    channels, dropout = int(params.get("channels", 32)), float(params["dropout"])
    length = splits.n_features
    for _ in range(3):
        length = (length + 2 - 3) // 2 + 1
    return nn.Sequential(
        nn.Unflatten(1, (1, splits.n_features)),
        nn.Conv1d(1, channels, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(channels * length, splits.n_classes),
    )
