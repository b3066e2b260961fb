"""Run monitoring: TensorBoard event files, a CSV of every iteration, hparams at the start."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

PROGRESS_FILE = "progress.csv"


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


class RunLogger:
    """Writes each iteration's metrics to TensorBoard (scalars) and `progress.csv` in the run directory."""

    def __init__(self, run_dir: Path, config: dict[str, Any], metric_tags: list[str]) -> None:
        self.run_dir = run_dir
        self.writer = SummaryWriter(log_dir=str(run_dir))
        # Written into the run's own event file (SummaryWriter.add_hparams would open a second run).
        experiment, start, end = hparams(
            {k: _hparam_value(v) for k, v in config.items()}, {tag: math.nan for tag in metric_tags}
        )
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        self._csv_path = run_dir / PROGRESS_FILE
        self._columns: list[str] | None = None
        if self._csv_path.exists():  # a resumed run appends under the existing header
            with self._csv_path.open(newline="") as f:
                self._columns = next(csv.reader(f), None)

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
