"""Keep freed memory in the process instead of returning it to the kernel after every tensor.

A meta-iteration allocates and frees activation tensors of the whole meta-batch (tens of MB) many
times; glibc serves blocks above its mmap threshold with fresh mmap/munmap calls, and trims the heap
after large frees, so every pass pays page faults and system time. Raising the thresholds (as the
MALLOC_*_ environment variables would) made a navigation-2d meta-iteration about 18 % faster on the
development machine (docs/benchmarks.md). A no-op where the C library has no `mallopt` (not glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 1 << 28}


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if the C library accepted them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in _SETTINGS.items())
