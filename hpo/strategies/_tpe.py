from __future__ import annotations

from hpo.strategies._base import EngineStrategy


class TpeStrategy(EngineStrategy):
    """Tree-structured Parzen Estimator, run by the engine's own implementation."""

    name = "tpe"
