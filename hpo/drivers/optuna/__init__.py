"""The Optuna engine: trials run in this process or in a pool of warm worker processes, and
Optuna's pruners decide from the intermediate values in the store."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hpo.drivers._base import Driver, DriverOptions


class OptunaOptions(DriverOptions):
    """Where the Optuna engine runs trials (``hpo.search(..., driver=OptunaOptions(workers=4))``).

    Each worker is pinned to a device slot and stays warm between trials; with one slot,
    trials run in the search's own process. The slots are checked against this machine when
    the search is prepared.
    """

    name = "optuna"
    time_limits = True
    workers: int | str = Field("auto", description="worker processes: N, or auto (one per GPU slot; "
                                                  "half the cores on a CPU-only machine)")
    gpus: str | None = Field(None, description="all, none, or GPU ids like 0,1 [default: all there are]")
    trials_per_gpu: int = Field(1, description="worker slots per GPU, for small models")

    def make(self, home: Path) -> Driver:
        from hpo.drivers.optuna._driver import OptunaDriver

        return OptunaDriver(self)


__all__ = ["OptunaOptions"]
