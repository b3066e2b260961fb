"""Loggers of a run (`metarl.loggers` entry points): the contract, the built-ins and the fan-out."""

from metarl.loggers.base import Logger
from metarl.loggers.run_loggers import RunLoggers

__all__ = ["Logger", "RunLoggers"]
