"""Dispatch: device slots and the pool of warm worker processes that fill them."""

from hpo.dispatch._pool import WorkerPool
from hpo.dispatch._slots import DeviceSlot, plan_slots, usable_device

__all__ = ["DeviceSlot", "WorkerPool", "plan_slots", "usable_device"]
