"""Drivers run a search's trials on an engine. Each engine is one folder here, with its options
as one typed object; registering an engine is one line in ``DRIVERS``. Engines are imported only
when used."""

from __future__ import annotations

import pkgutil

from hpo._errors import HpoError, unknown
from hpo.drivers._base import Driver, DriverOptions, flags_of

DRIVERS = {
    "optuna": "hpo.drivers.optuna:OptunaOptions",
    "ray": "hpo.drivers.ray:RayOptions",
}
"""Each engine's name and its options class."""


def driver_options(driver: str | DriverOptions) -> DriverOptions:
    """The options of the engine ``driver`` names (its defaults), or the options given."""
    if isinstance(driver, DriverOptions):
        return driver
    if driver not in DRIVERS:
        raise HpoError(unknown("driver", driver, DRIVERS), argument="driver")
    return pkgutil.resolve_name(DRIVERS[driver])()


__all__ = ["DRIVERS", "Driver", "DriverOptions", "driver_options", "flags_of"]
