"""`jsonl`: each iteration's scalars as one JSON object per line in `RUN_DIR/scalars.jsonl`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from metarl.hyperparameters import Check, Hyperparameter
from metarl.loggers import Logger

FILE_NAME = Check(lambda v: isinstance(v, str) and bool(v) and "/" not in v, "a file name without a folder")


class JSONLinesLogger(Logger):
    """Appends `{"step": N, "scalars": {...}}` per iteration; a NaN (not measured) is written as null."""

    file_name = Hyperparameter("scalars.jsonl", FILE_NAME, "file in the run directory")

    def __init__(self, run_dir: Path, config: dict[str, Any], **keys: Any) -> None:
        super().__init__(run_dir, config, **keys)
        self._file = (self.run_dir / self.file_name).open("a")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        values = {k: None if math.isnan(v) else v for k, v in scalars.items()}
        self._file.write(json.dumps({"step": step, "scalars": values}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
