"""The logger contract: a class built as `cls(run_dir, config, **keys)` with `log(step, scalars)` and `close()`.

A run calls every logger named in its config key `loggers` with each iteration's scalars (validation
included), on rank 0 only, and closes each on every exit path. `metarl.loggers` entry points add
loggers; the built-in `tensorboard`, `csv` and `wandb` are registered the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarl.hyperparameters import configure


class Logger:
    """Base class of `metarl.loggers` plugins (optional: any class with `log` and `close` will do).

    `config` is the run's resolved config as plain data (what `config.yaml` records). A subclass
    declares its keys (`logger_kwargs: {NAME: {KEY: VALUE}}`) as `metarl.hyperparameters.Hyperparameter`s.
    """

    takes_declared_keys_only = True  # **keys holds only the declared keys

    def __init__(self, run_dir: Path, config: dict[str, Any], **keys: Any) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        configure(self, keys, f"logger {type(self).__name__}")

    @classmethod
    def check_available(cls) -> None:
        """Raise ValueError, saying what to install, if this logger cannot run here; called before the
        run directory is created."""

    def resume(self, step: int) -> None:
        """Called once before the first `log` of a run continued from its checkpoint at `step`: steps
        after `step` that an earlier process logged are logged again."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Record one iteration's scalars; NaN marks a metric not measured at this step."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release files; called once, on every exit path."""
