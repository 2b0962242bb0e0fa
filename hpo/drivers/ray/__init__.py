"""The Ray engine: trials run on Ray actors (one per resource slot, reused) on a local Ray
instance or a cluster, while the search's own process runs the trial loop and its pruning, as
Ray Tune's controller does; every Ray import of ``hpo`` lives in this folder."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from hpo.drivers._base import Driver, DriverOptions


class RayOptions(DriverOptions):
    """Where Ray runs trials (``hpo.search(..., driver=RayOptions(gpus_per_trial=0.25))``)."""

    name = "ray"
    address: str | None = Field(None, description="an existing cluster (host:6379) [default: a local Ray "
                                                  "instance]", json_schema_extra={"flag": "--ray-address"})
    cpus_per_trial: PositiveFloat = Field(1.0, description="CPUs per trial")
    gpus_per_trial: NonNegativeFloat = Field(0.0, description="GPUs per trial; 0.25 packs four trials on a GPU")
    max_concurrent: PositiveInt | None = Field(None, description="trials at once, at most [default: as many "
                                                                 "as the resources allow]")

    def make(self, home: Path) -> Driver:
        from hpo.drivers.ray._driver import RayDriver

        return RayDriver(self, home)


__all__ = ["RayOptions"]
