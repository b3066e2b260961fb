"""Files that are either whole or absent: write to a temporary file, fsync, rename.

Checkpoints hold only tensors and plain Python values, so they load with
`torch.load(weights_only=True)` and never execute code.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metarl import __version__
from metarl.errors import MetarlError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file of `header` and `rows`, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue().encode())


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"iter-{iteration:06d}.pt"


def best_checkpoint_path(run_dir: Path) -> Path:
    """The checkpoint with the highest validation return after adaptation so far."""
    return run_dir / CHECKPOINT_DIR / "best.pt"


def save_checkpoint(path: Path, iteration: int, state: dict[str, Any]) -> Path:
    """Write `state` as the checkpoint of `iteration` to `path` (atomically) and return the path."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "iteration": iteration, **state}, buffer)
    atomic_write(path, buffer.getvalue())
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints by iteration, oldest first (not `best.pt`)."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("iter-*.pt"))


def select_checkpoint(run_dir: Path, which: str) -> Path:
    """`best`, `last` or an iteration number to a checkpoint path of the run."""
    if which == "best":
        path = best_checkpoint_path(run_dir)
    elif which == "last":
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            raise MetarlError(f"run {str(run_dir)!r} has no checkpoint")
        path = checkpoints[-1]
    elif which.isdigit():
        path = checkpoint_path(run_dir, int(which))
    else:
        raise MetarlError(f"--checkpoint must be best, last or an iteration number, got {which!r}")
    if not path.is_file():
        raise MetarlError(f"run {str(run_dir)!r} has no checkpoint {which!r} ({path.name})")
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state; a file that is not a metarl checkpoint is a MetarlError."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MetarlError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise MetarlError(f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise MetarlError(f"{str(path)!r} is not a metarl checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise MetarlError(
            f"checkpoint {str(path)!r} has format {state['format']} (metarl {state.get('metarl_version', '?')}); "
            f"this metarl ({__version__}) reads format {CHECKPOINT_FORMAT}"
        )
    return state


def load_newest_checkpoint(run_dir: Path, warn: Callable[[str], None]) -> dict[str, Any]:
    """The newest checkpoint of a run that loads; unreadable newer ones are reported through `warn`.

    Temporary files left by a process killed while writing are removed first.
    """
    for stale in (run_dir / CHECKPOINT_DIR).glob(".*.tmp"):
        warn(f"removing {stale.name}, left by a process killed while it wrote a checkpoint")
        stale.unlink()
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise MetarlError(f"run {str(run_dir)!r} has no checkpoint to resume from")
    for path in reversed(checkpoints):
        try:
            return load_checkpoint(path)
        except MetarlError as exc:
            warn(f"skipping unreadable checkpoint: {exc}")
    raise MetarlError(f"no checkpoint of run {str(run_dir)!r} can be read")
