"""Run monitoring: TensorBoard event files, a CSV of every iteration, hparams at the start."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from metarl.checkpoint import write_csv

PROGRESS_FILE = "progress.csv"


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


class RunLogger:
    """Writes each iteration's metrics to TensorBoard (scalars) and `progress.csv` in the run directory.

    A run resumed after iteration `done` (its checkpoint's) may have logged later iterations before it
    stopped; those rows are dropped from the CSV and purged from TensorBoard, as they are logged again.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], metric_tags: list[str], done: int = 0) -> None:
        self.run_dir = run_dir
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=done + 1 if done else None)
        # Written into the run's own event file (SummaryWriter.add_hparams would open a second run).
        experiment, start, end = hparams(
            {k: _hparam_value(v) for k, v in config.items()}, {tag: math.nan for tag in metric_tags}
        )
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        self._csv_path = run_dir / PROGRESS_FILE
        self._columns: list[str] | None = None
        if self._csv_path.exists():  # a resumed run appends under the existing header
            self._drop_rows_after(done)

    def _drop_rows_after(self, done: int) -> None:
        """Keep the CSV's header and its rows up to iteration `done` (a blank or torn row goes too);
        rewrite the file only if some go."""
        with self._csv_path.open(newline="") as f:
            rows = list(csv.reader(f))
        self._columns = rows[0] if rows else None
        kept = [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) <= done]
        if self._columns is not None and len(kept) < len(rows) - 1:
            write_csv(self._csv_path, self._columns, kept)

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        """Record `metrics` at step `iteration` as one CSV row, and in TensorBoard unless NaN (not measured)."""
        for tag, value in metrics.items():
            if not math.isnan(value):
                self.writer.add_scalar(tag, value, iteration)
        self.writer.flush()
        row = {"iteration": iteration, **metrics}
        new_file = self._columns is None
        if new_file:
            self._columns = list(row)
        with self._csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        self.writer.close()
