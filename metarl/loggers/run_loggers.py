"""The loggers of one run, called together: one that raises is reported once and dropped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarl import errors, registry
from metarl.errors import DISK_ERRNOS, first_line


class RunLoggers:
    """Builds the loggers a config names (`loggers`, with `logger_kwargs`) for a run directory.

    A logger that raises in `resume`, `log` or `close` is reported through `warn` once, with its name
    and package, and the run goes on with the others. A full or read-only disk is not a logger's fault:
    that OSError propagates from `log` and stops the run (with a resume line).
    """

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        resume_from: int = 0,
        warn: Callable[[str], None] = errors.warn,
    ) -> None:
        from metarl.build import make_loggers

        self.run_dir = run_dir
        self._warn = warn
        self._active = make_loggers(config, run_dir)
        if resume_from:
            self._call("resume", resume_from)

    def _call(self, method: str, *args: Any) -> None:
        for name, logger in list(self._active.items()):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS and method != "close":
                    raise
                del self._active[name]
                package = registry.loggers.package_of(name)
                then = "" if method == "close" else "; the run goes on without it"
                self._warn(
                    f"logger {name!r} ({package}) failed in {method}: {type(exc).__name__}: {first_line(exc)}{then}"
                )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._call("log", step, dict(scalars))

    def close(self) -> None:
        self._call("close")
        self._active = {}
