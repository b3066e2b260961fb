"""One writer per run directory: an advisory lock on `RUN_DIR/.metarl.lock`.

The lock is an `flock` held on an open file, so the kernel releases it when the holding process exits,
however it exits (kill -9 included): a lock file left by a dead process is stale and is taken over.
The file records the holder (pid, host, command, start time) for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO

from metarl.checkpoint import strict_json
from metarl.errors import MetarlError

LOCK_FILE = ".metarl.lock"


class RunDirectoryInUse(MetarlError):
    """Another process trains in this run directory."""


def _describe(holder: dict[str, object]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} ({holder.get('command', '?')}, since {when})"


def _read_holder(file: IO[str]) -> dict[str, object]:
    file.seek(0)
    try:
        holder = json.loads(file.read() or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


class RunLock:
    """Held while a process writes a run directory; `acquire` refuses a second writer in one line."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, warn: Callable[[str], None] | None = None) -> None:
        """Take the lock (no-op if this object holds it); RunDirectoryInUse names the holder.

        A holder recorded in the file but no longer holding the lock ended without releasing it
        (killed): `warn` is told, and the lock is taken over.
        """
        if self._file is not None:
            return
        file = self.path.open("a+")
        file.seek(0)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(file)
            file.close()
            raise RunDirectoryInUse(
                f"run directory {str(self.path.parent)!r} is in use by {_describe(holder)}; "
                "only one process may write a run: wait for it to finish or stop it"
            ) from None
        stale = _read_holder(file)
        if stale and warn is not None:
            warn(f"taking over the lock of {_describe(stale)}, which ended without releasing it")
        file.seek(0)
        file.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(["metarl", *sys.argv[1:]])[:200],
            "started": time.time(),
        }
        file.write(strict_json(holder))
        file.flush()
        self._file = file
        # released when this object goes or the interpreter exits normally; a killed process leaves the holder
        self._release = weakref.finalize(self, _release, file)

    def release(self) -> None:
        """Give the lock up: the file stays, emptied (a holder left in it marks a killed writer)."""
        if self._file is not None:
            self._release()
            self._file = None


def _release(file: IO[str]) -> None:
    file.truncate(0)
    file.flush()
    fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    file.close()
