"""Device slots: where each worker runs — a GPU (several slots per GPU for small models) or CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpo._errors import HpoError


@dataclass(frozen=True)
class DeviceSlot:
    """One worker's place: ``CUDA_VISIBLE_DEVICES`` (None on CPU) and its torch threads."""

    name: str
    device: str
    cuda_visible_devices: str | None
    threads: int

    def pin(self) -> None:
        """Apply to the current process; call before torch touches CUDA."""
        if self.cuda_visible_devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        import torch

        torch.set_num_threads(self.threads)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def plan_slots(workers: str | int = "auto", gpus: str | None = None, trials_per_gpu: int = 1) -> list[DeviceSlot]:
    """Slots for ``workers`` workers: K per GPU on the GPUs named (``"all"``, ``"0,2"``), or on
    every GPU there is; CPU slots when there is none, their threads sharing the cores."""
    if trials_per_gpu < 1:
        raise HpoError(f"--trials-per-gpu: must be at least 1, got {trials_per_gpu}")
    count = _workers(workers)
    available = visible_gpus()
    if gpus not in (None, "all", "none"):
        try:
            ids = [int(part) for part in str(gpus).split(",")]
        except ValueError:
            raise HpoError(f"--gpus: expected 'all', 'none' or GPU ids like 0,1, got {gpus!r}") from None
        missing = [i for i in ids if not 0 <= i < available]
        if missing:
            raise HpoError(f"--gpus: no GPU {missing[0]} on this machine ({available} visible)")
    else:
        ids = list(range(available)) if gpus != "none" else []
    if ids:
        slots = [(gpu, k) for k in range(trials_per_gpu) for gpu in ids]  # spread over GPUs first
        count = count or len(slots)
        cores = os.cpu_count() or 1
        return [
            DeviceSlot(f"cuda:{gpu}/{k}", "cuda", str(gpu), max(1, cores // count))
            for gpu, k in (slots[i % len(slots)] for i in range(count))
        ]
    cores = os.cpu_count() or 1
    count = count or max(1, cores // 2)
    return [DeviceSlot(f"cpu/{i}", "cpu", None, max(1, cores // count)) for i in range(count)]


def _workers(workers: str | int) -> int:
    """0 for auto."""
    if workers == "auto":
        return 0
    try:
        count = int(workers)
    except ValueError:
        raise HpoError(f"--workers: expected a number or 'auto', got {workers!r}") from None
    if count < 1:
        raise HpoError(f"--workers: must be at least 1, got {count}")
    return count
