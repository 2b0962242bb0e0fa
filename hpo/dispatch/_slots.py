"""Device slots: where each worker runs — a GPU (several slots per GPU for small models) or CPU."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

from hpo._errors import HpoError


@dataclass(frozen=True)
class DeviceSlot:
    """One worker's place: a GPU (its index among the GPUs this process sees) or the CPU,
    and the torch threads it may use.

    ``cuda_visible_devices`` is what pins a fresh worker process to that GPU: the GPU's entry
    in this process's own ``CUDA_VISIBLE_DEVICES`` where one is set, so that ``--gpus 1`` under
    ``CUDA_VISIBLE_DEVICES=4,5`` runs on GPU 5.
    """

    name: str
    gpu: int | None
    cuda_visible_devices: str | None
    threads: int

    @property
    def device(self) -> str:
        """The torch device of this slot, as this process names it."""
        return "cpu" if self.gpu is None else f"cuda:{self.gpu}"

    def pin(self) -> DeviceSlot:
        """Pin the current, fresh process to this slot (before torch touches CUDA); returns
        the slot as the process now sees it: its GPU is the only one, ``cuda:0``. Torch takes
        its threads from ``OMP_NUM_THREADS`` when it loads, so an objective that never imports
        torch never pays for it."""
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        else:
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        if self.gpu is None:
            return self
        os.environ["CUDA_VISIBLE_DEVICES"] = str(self.cuda_visible_devices)
        return dataclasses.replace(self, gpu=0)


def usable_device(device: str) -> str:
    """``device`` if this process can use it, else the CPU (a Ray trial's GPU share may be on
    another node than the driver, or the cluster may have none)."""
    if device == "cpu":
        return device
    import torch

    return device if torch.cuda.is_available() else "cpu"


GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
"""What NVIDIA's driver (on Linux, and under WSL) and AMD's (ROCm) create: without any of them
there is no GPU for torch to find, and a search need not import torch (a second) to know it."""


def visible_gpus() -> int:
    if not any(os.path.exists(path) for path in GPU_DRIVER_FILES):
        return 0
    import torch

    return torch.cuda.device_count()


def plan_slots(workers: str | int = "auto", gpus: str | None = None, trials_per_gpu: int = 1,
               at_most: int | None = None) -> list[DeviceSlot]:
    """Slots for ``workers`` workers (``at_most`` of them: a budget's trials left): K per GPU on
    the GPUs named (``"all"``, ``"0,2"``), or on every GPU there is; CPU slots when there is
    none, their threads sharing the cores."""
    if trials_per_gpu < 1:
        raise HpoError(f"must be at least 1, got {trials_per_gpu}", argument="trials_per_gpu")
    count = _workers(workers)
    cores = os.cpu_count() or 1
    ids = _gpu_ids(gpus)
    if not ids:
        count = min(count or max(1, cores // 2), at_most or count or cores)
        return [DeviceSlot(f"cpu/{i}", None, None, max(1, cores // count)) for i in range(count)]
    slots = [(gpu, k) for k in range(trials_per_gpu) for gpu in ids]  # spread over GPUs first
    count = min(count or len(slots), at_most or count or len(slots))
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = inherited.split(",") if inherited else [str(i) for i in range(max(ids) + 1)]
    return [
        DeviceSlot(f"cuda:{gpu}/{k}", gpu, names[gpu].strip(), max(1, cores // count))
        for gpu, k in (slots[i % len(slots)] for i in range(count))
    ]


def _gpu_ids(gpus: str | None) -> list[int]:
    """The GPUs named by ``--gpus``, as indices among the visible ones."""
    if gpus == "none":
        return []
    available = visible_gpus()
    if gpus in (None, "all"):
        return list(range(available))
    try:
        ids = list(dict.fromkeys(int(part) for part in str(gpus).split(",")))
    except ValueError:
        raise HpoError(f"expected 'all', 'none' or GPU ids like 0,1, got {gpus!r}", argument="gpus") from None
    missing = [i for i in ids if not 0 <= i < available]
    if missing:
        raise HpoError(f"no GPU {missing[0]} on this machine ({available} visible)", argument="gpus")
    return ids


def _workers(workers: str | int) -> int:
    """0 for auto."""
    if workers == "auto":
        return 0
    try:
        count = int(workers)
    except ValueError:
        raise HpoError(f"expected a number or 'auto', got {workers!r}", argument="workers") from None
    if count < 1:
        raise HpoError(f"must be at least 1, got {count}", argument="workers")
    return count
