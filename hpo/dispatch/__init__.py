"""Dispatch: device slots, the pool of warm worker processes that fill them, and what trials
print in processes other than the search's."""

from hpo.dispatch._pool import WorkerPool
from hpo.dispatch._printed import Printed, PrintedLines, send_printed, write_printed
from hpo.dispatch._slots import DeviceSlot, plan_slots, usable_device

__all__ = ["DeviceSlot", "Printed", "PrintedLines", "WorkerPool", "plan_slots", "send_printed", "usable_device",
           "write_printed"]
