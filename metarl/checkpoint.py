"""Files that are either whole or absent: write to a temporary file, fsync, rename.

Checkpoints hold only tensors and plain Python values, so they load with
`torch.load(weights_only=True)` and never execute code.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metarl import __version__
from metarl.errors import MetarlError, first_line, os_error_message, os_error_reason, short_repr

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1


def _user_file_mode() -> int:
    """The mode `open` gives a new file under this process's umask (mkstemp's files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def sync_directory(path: Path) -> None:
    """Make a file's creation or renaming in directory `path` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one.

    The file gets the user's umask, as any file the user creates (readable by the group on a shared logdir).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _user_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file of `header` and `rows`, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue().encode())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy and torch values
        return _json_safe(value.tolist())
    return value


def strict_json(document: Any) -> str:
    """`document` as strict JSON: NaN and ±Infinity (which `json` writes as tokens that JSON does not
    have) become null, numpy and torch values plain ones."""
    return json.dumps(_json_safe(document), indent=2, allow_nan=False)


def write_json(path: Path, document: Any) -> None:
    """`document` as a strict JSON file (`strict_json`), written atomically: every JSON file metarl writes."""
    atomic_write(path, strict_json(document).encode())


#: bytes written (and removed) to check that a folder takes files, before a run or an evaluation starts
PROBE_BYTES = 64 * 1024


def check_writable_dir(path: Path, what: str) -> None:
    """Refuse, as one line starting with `what`, a folder metarl is about to write into that cannot take
    files: `path`, or the nearest of its parents that exists, must be a directory where a file can be
    written (checked by writing and removing one: a read-only or full file system, no permission)."""
    path = Path(path)
    existing = path
    try:
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as exc:
        raise MetarlError(f"{what}: {os_error_message(exc, path, 'look up')}") from None
    if not is_dir:
        raise MetarlError(f"{what}: {short_repr(str(existing))} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=".metarl-write-check-", suffix=".tmp")
        try:
            os.write(fd, bytes(PROBE_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        reason = os_error_reason(exc)
        raise MetarlError(f"{what}: writing a file in {short_repr(str(existing))} failed: {reason}") from None


def check_writable_file(path: Path, what: str, suffix: str = "") -> None:
    """Refuse, as one line starting with `what`, an output file path that is a directory (also with
    `suffix` appended, as stable-baselines3 appends .zip) or whose folder cannot take files."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + suffix)) if suffix and path.suffix != suffix else (path,):
        if candidate.is_dir():
            raise MetarlError(f"{what}: {short_repr(str(candidate))} is a directory, not a file path")
    check_writable_dir(path.parent, what)


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
    elif which.isascii() and which.isdigit() and len(which) <= 10:  # ('²' is a digit int() refuses)
        path = checkpoint_path(run_dir, int(which))
    else:
        raise MetarlError(f"--checkpoint must be best, last or an iteration number, got {short_repr(which)}")
    if not path.is_file():
        raise MetarlError(f"run {str(run_dir)!r} has no checkpoint {which!r} ({path.name})")
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state; a file that is not a metarl checkpoint is a MetarlError."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MetarlError(f"checkpoint {str(path)!r} does not exist") from None
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise MetarlError(f"checkpoint {str(path)!r} cannot be read: UnpicklingError: {first_line(exc)}") from None
        # torch's advice, to retry with weights_only=False, would run the file's code: never
        raise MetarlError(
            f"checkpoint {str(path)!r} holds Python objects beyond tensors and plain values: refused without "
            "running them (metarl never loads checkpoints with weights_only=False)"
        ) from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        cause = f"{type(exc).__name__}: {first_line(exc)}"
        raise MetarlError(f"checkpoint {str(path)!r} cannot be read: {cause}") from None
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
