"""The simulated engine: trials replayed in simulated time, without training or sleeping, as
Syne Tune's simulator replays recorded curves. Several virtual workers run the real trial loop
(store, MLflow, strategies, pruning, budgets, timeout) on one clock that jumps from one report
to the next, so that asynchronous searches of hours run in seconds and always alike.

An objective for it is a generator: it yields the seconds each step took before reporting it,
and returns its result as any objective does (``ReplayedCurves`` replays recorded curves)::

    def objective(params, trial):
        for epoch in range(1, 11):
            yield 3.0                      # the epoch took three simulated seconds
            trial.report(epoch, val_loss=curve(params, epoch))
        return curve(params, 10)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt

from hpo.drivers._base import Driver, DriverOptions
from hpo.drivers.simulated._replay import ReplayedCurves, run_to_end


class SimulatedOptions(DriverOptions):
    """Virtual workers for a simulated search (``hpo.search(..., driver=SimulatedOptions(workers=4))``)."""

    name = "simulated"
    time_limits = False
    workers: PositiveInt = Field(4, description="virtual workers running trials at once")

    def make(self, home: Path) -> Driver:
        from hpo.drivers.simulated._driver import SimulatedDriver

        return SimulatedDriver(self)


__all__ = ["ReplayedCurves", "SimulatedOptions", "run_to_end"]
