"""How a search stops hopeless trials early: the pruner and its warm-up, from the space file
(``pruning:``), flags or the API."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from hpo._options import OneLineModel

PRUNERS = ("none", "median", "successive-halving", "hyperband")


class Pruning(OneLineModel):
    """The pruner and when it may start deciding.

    Args:
        pruner: ``none``, ``median`` (stop a trial whose best value so far is worse than the
            median of finished trials at the same step), ``successive-halving`` (keep the best
            third at each rung) or ``hyperband`` (successive halving over several brackets).
        warmup_trials: Finished trials the median rule needs before it stops any (5).
        warmup_steps: Reports a trial makes before any rule judges it; by default a fifth of
            the space's ``epochs`` (at least 2): early epochs say little about where a trial ends.
        by_stage: Compare a trial only with trials of its own coarse-to-fine stage, which train
            in a narrower region than the coarse stage did (on by default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pruner: Literal["none", "median", "successive-halving", "hyperband"] = "none"
    warmup_trials: int = Field(5, ge=0)
    warmup_steps: int | None = Field(None, ge=0)
    by_stage: bool = True

    def steps(self, epochs: int) -> int:
        """The warm-up in reports, for trials of ``epochs`` epochs."""
        return self.warmup_steps if self.warmup_steps is not None else max(2, epochs // 5)
