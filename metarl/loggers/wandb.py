"""Weights & Biases (the `wandb` package, metarl's extra `[wandb]`): the run's scalars and config, online or offline.

The W&B run lives in `RUN_DIR/wandb`; its id is derived from the run directory's name, so a resumed
metarl run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Any

from metarl.hyperparameters import Check, Hyperparameter, one_of
from metarl.loggers.base import Logger

OPTIONAL_TEXT = Check(lambda v: v is None or (isinstance(v, str) and bool(v)), "a non-empty string, or null")


class WandbLogger(Logger):
    """Logs each iteration with `wandb.log(scalars, step=iteration)` (NaN metrics left out)."""

    project = Hyperparameter("metarl", OPTIONAL_TEXT, "W&B project")
    entity = Hyperparameter(None, OPTIONAL_TEXT, "W&B entity (team or user); null: your default")
    mode = Hyperparameter(
        None, one_of(None, "online", "offline", "disabled"), "W&B mode; null: WANDB_MODE or W&B's default"
    )

    @classmethod
    def check_available(cls) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise ValueError("the wandb package is not installed: pip install wandb (metarl's extra [wandb])")

    def __init__(self, run_dir: Path, config: dict[str, Any], **keys: Any) -> None:
        super().__init__(run_dir, config, **keys)
        import wandb

        run_id = hashlib.sha1(self.run_dir.resolve().name.encode()).hexdigest()[:16]
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(self.run_dir),
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            config=config,
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log({k: v for k, v in scalars.items() if not math.isnan(v)}, step=step)

    def close(self) -> None:
        self._run.finish()
