"""TensorBoard event files in the run directory, with the run's config as hparams."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from metarl.loggers.base import Logger
from metarl.metrics import SUMMARY


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


class TensorBoardLogger(Logger):
    """Scalars (NaN ones skipped) and the hparams view (`metarl.metrics.SUMMARY` against the config)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], **keys: Any) -> None:
        super().__init__(run_dir, config, **keys)
        self._writer: SummaryWriter | None = None

    def resume(self, step: int) -> None:
        self._open(purge_step=step + 1)

    def _open(self, purge_step: int | None = None) -> SummaryWriter:
        # Opened at the first call so that a resumed run can purge the steps it logs again.
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
            # Written into the run's own event file (SummaryWriter.add_hparams would open a second run).
            summaries = hparams(  # type: ignore[no-untyped-call]  # torch's summary module is untyped
                {k: _hparam_value(v) for k, v in self.config.items()}, {tag: math.nan for tag in SUMMARY}
            )
            file_writer = self._writer.file_writer
            assert file_writer is not None  # SummaryWriter's constructor opens it
            for summary in summaries:
                file_writer.add_summary(summary)
        return self._writer

    def log(self, step: int, scalars: dict[str, float]) -> None:
        writer = self._open()
        for tag, value in scalars.items():
            if not math.isnan(value):
                writer.add_scalar(tag, value, step)
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
