from __future__ import annotations

from hpo.strategies._base import SamplerStrategy


class TpeStrategy(SamplerStrategy):
    """Tree-structured Parzen Estimator: Optuna's ``TPESampler``, seeded per trial so that
    workers drawing at the same time draw different configurations (constant liar: trials
    still running count as bad)."""

    name = "tpe"
