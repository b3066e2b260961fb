"""`progress.csv`: one row per iteration, durable before the checkpoint that covers it."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from metarl.checkpoint import sync_directory, write_csv
from metarl.loggers.base import Logger

PROGRESS_FILE = "progress.csv"


class CSVLogger(Logger):
    """Appends each iteration as a row of `progress.csv` (columns fixed by the first row), synced to
    disk before `log` returns, so before the trainer writes the checkpoint that covers the row.

    On resume from iteration `step`, rows after it and a torn last row (a crash mid-write) are dropped.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], **keys: Any) -> None:
        super().__init__(run_dir, config, **keys)
        self.path = self.run_dir / PROGRESS_FILE
        self._columns: list[str] | None = None

    def resume(self, step: int) -> None:
        if not self.path.exists():
            return
        data = self.path.read_text(errors="replace")
        rows = list(csv.reader(io.StringIO(data)))
        if rows and not data.endswith("\n"):
            rows.pop()  # cut short by a crash while it was written
        if not rows:
            self.path.unlink()
            return
        self._columns, body = rows[0], rows[1:]
        kept = [r for r in body if len(r) == len(self._columns) and r[0].isdigit() and int(r[0]) <= step]
        if len(kept) < len(body) or not data.endswith("\n"):
            write_csv(self.path, self._columns, kept)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        row = {"iteration": step, **scalars}
        new_file = self._columns is None
        columns = self._columns = list(row) if self._columns is None else self._columns
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        if new_file:
            writer.writeheader()
        writer.writerow(row)
        with self.path.open("a", newline="") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if new_file:
            sync_directory(self.run_dir)

    def close(self) -> None:
        """Each row is written and synced in `log`: nothing is held open."""
