"""Meta-trained runs shipped with metarl, as rl-baselines3-zoo ships trained agents.

Each is a run directory in the package (`metarl/pretrained/NAME/`: `config.yaml`, `progress.csv`,
`checkpoints/best.pt`, the best checkpoint of its reproduction, see docs/benchmarks.md). The CLI takes
`pretrained:NAME` wherever it takes a run directory to read (`evaluate`, `adapt`); nothing is ever
written into the installed package.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from metarl.errors import UnknownNameError

PREFIX = "pretrained:"


def root() -> Path:
    """The folder of the shipped runs."""
    return Path(str(resources.files("metarl") / "pretrained"))


def names() -> list[str]:
    """The shipped runs, sorted."""
    folder = root()
    return sorted(p.name for p in folder.iterdir() if (p / "config.yaml").is_file()) if folder.is_dir() else []


def is_pretrained(reference: str | Path) -> bool:
    return str(reference).startswith(PREFIX)


def run_dir(reference: str | Path) -> Path:
    """`pretrained:NAME` as the shipped run's directory; any other reference as a path."""
    text = str(reference)
    if not is_pretrained(text):
        return Path(text)
    name, known = text[len(PREFIX) :], names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {PREFIX}{close[0]}?" if close else ""
        raise UnknownNameError(f"unknown pretrained run {name!r}.{hint} Shipped: {', '.join(known) or 'none'}")
    return root() / name
