"""Processes that end with the process that started them, however it ends (Linux)."""

from __future__ import annotations

import ctypes
import os
import sys

#: prctl option: the signal the kernel sends this process when its parent thread ends
_PR_SET_PDEATHSIG = 1
#: environment variable by which `metarl sweep` asks its `metarl train` children to stop with it
STOP_WITH_PARENT_ENV = "METARL_STOP_WITH_PARENT"


def signal_on_parent_death(parent_pid: int, signum: int) -> bool:
    """Have the kernel send `signum` to this process when its parent ends (Linux; elsewhere nothing
    is asked). False when the parent, `parent_pid`, had already ended when the request took effect."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
        except (OSError, AttributeError):
            pass
    return os.getppid() == parent_pid
