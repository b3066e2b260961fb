"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import errno
import reprlib
import sys
from typing import Any


def warn(message: str) -> None:
    """A warning the user should see, on stderr as one `metarl: warning:` line."""
    print(f"metarl: warning: {message}", file=sys.stderr)


class MetarlError(Exception):
    """Base class of every error caused by input: names, configs, plugins, paths."""


class UnknownNameError(MetarlError):
    """A registry lookup of a name no installed package provides."""


class PluginError(MetarlError):
    """A plugin that fails to import or does not satisfy the plugin contract."""


class ConfigError(MetarlError):
    """A config key or value that is not allowed."""


class _BoundedRepr(reprlib.Repr):
    """reprlib's abbreviating repr, with ints of any size shown without converting them to decimal."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # str() of a huge int is slow, and above 4300 digits refused
            return f"<{'-' if x < 0 else ''}int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()
_REPR.maxlevel = 3
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxdict = 8
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 8
_REPR.maxstring = 80
_REPR.maxlong = 40
_REPR.maxother = 80


def short_repr(value: Any, limit: int = 200) -> str:
    """`repr(value)` abbreviated for an error message: nesting, lengths and the whole string bounded,
    however large or deeply nested the value (a YAML alias bomb, a megabyte string) is."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a plugin object whose __repr__ fails
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(text: object, limit: int = 300) -> str:
    """The first non-empty line of a (library's) message, bounded: multi-line advice is left out."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: what a full or read-only disk raises: a run stops with a resume line, whichever writer hit it
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def os_error_reason(exc: OSError) -> str:
    """What an OSError says the user can fix, in a few words (a full disk, a read-only file system)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device (or disk quota exceeded)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or first_line(exc) or type(exc).__name__


def os_error_message(exc: OSError, path: object, what: str = "write") -> str:
    """An OSError as one line naming the path and the cause, e.g. on ENOSPC while training:
    `cannot write 'runs/x/checkpoints/iter-000010.pt': no space left on the device (or disk quota exceeded)`."""
    return f"cannot {what} {short_repr(str(path))}: {os_error_reason(exc)}"
