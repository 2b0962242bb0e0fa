"""glibc's allocator, told to keep what a population's step frees for the next step.

A CPU step of 32 stacked MLPs makes and frees dozens of activations and gradients of about
800 KB each. With glibc's defaults they come from fresh ``mmap`` pages, or from the heap's top,
which glibc hands back to the kernel once a few MB lie free there: so every step faulted its
pages in again, zeroed by the kernel (``bench/population.py``'s K=32 MNIST-1D MLP: two epochs
more, 100 steps, cost 10,000-18,000 more page faults; 2-core x86_64). Served from the heap, with
up to 64 MB kept free there, they cost none. Jemalloc or tcmalloc (``LD_PRELOAD``) would do the
same for the whole process; this needs nothing installed.
"""

from __future__ import annotations

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = {
    _M_MMAP_THRESHOLD: 32 << 20,  # blocks up to 32 MB from the heap, not from fresh mmap pages
    _M_TRIM_THRESHOLD: 64 << 20,  # keep up to 64 MB free at the heap's top before giving it back
    _M_TOP_PAD: 16 << 20,  # grow the heap 16 MB at a time
}


@functools.cache
def keep_freed_memory() -> bool:
    """Set ``SETTINGS`` with glibc's ``mallopt``, once a process; whether they were set (not
    where the C library is not glibc's)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(option, value) == 1 for option, value in SETTINGS.items())
