"""mkdocs hooks: the generated parts of the site, rendered from metarl itself at build time.

A page holds a marker on a line of its own, which is replaced by the generated Markdown:

- `<!-- metarl:cli -->` (docs/cli.md): `metarl --help` and every subcommand's help, from the real
  argparse parser in `metarl/cli.py`;
- `<!-- metarl:run-keys -->` (docs/config.md): the run-level keys declared in `metarl/config.py`
  (`metarl.config.key_docs`, what `metarl list config` prints);
- `<!-- metarl:component-keys -->` (docs/config.md): the declared keys of every built-in component
  (what `metarl list algorithms --verbose` and the other groups print).

A marker that cannot be rendered fails the build.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

MARKER = "<!-- metarl:{} -->"
#: headings of the registry groups, in the order the page lists them (any other group follows)
GROUPS = {
    "algorithms": "Meta-learners (`algo_kwargs`)",
    "policies": "Policies (`policy_kwargs`)",
    "regularizers": "Regularizers (`regularizers: {NAME: {weight: β, KEY: VALUE}}`)",
    "envs": "Task families (`env_kwargs`)",
    "loggers": "Loggers (`logger_kwargs`)",
}


@contextmanager
def _terminal(columns: int = 100):
    """argparse wraps help to the terminal's width: fix it (and switch colour off) while rendering."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "PYTHON_COLORS")}
    os.environ.update(COLUMNS=str(columns), NO_COLOR="1", PYTHON_COLORS="0")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render_cli() -> str:
    """`metarl --help`, then one section per subcommand with its `--help`."""
    from metarl.cli import build_parser

    with _terminal():
        parser = build_parser()
        parts = ["## `metarl`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subcommands(parser).items():
            parts += [f"## `metarl {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def _value(value: Any) -> str:
    """A default as it is written in a YAML config or after `--set KEY=`."""
    if value is inspect.Parameter.empty or value == "required":
        return "*required*"
    if isinstance(value, str):
        return f"`{value}`"
    try:
        return f"`{json.dumps(value)}`"
    except (TypeError, ValueError):
        return f"`{value!r}`"


def _cell(text: str) -> str:
    """Text in one table cell: one line, with `|` escaped, and `{`, `}` too (attr_list would read a
    trailing `{key: value}` as attributes)."""
    pieces = " ".join(str(text).split()).split("`")
    for i in range(0, len(pieces), 2):  # outside code spans (the table extension skips those)
        for char in "|{}":
            pieces[i] = pieces[i].replace(char, "\\" + char)
    return "`".join(pieces)


def _table(keys: list[tuple[str, Any, str, str]]) -> str:
    """(name, default, allowed, doc) rows, as `metarl.config.key_docs` and `metarl list --verbose` give them."""
    if not keys:
        return "No keys.\n"
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    rows += [f"| `{n}` | {_value(d)} | {_cell(a)} | {_cell(doc)} |" for n, d, a, doc in keys]
    return "\n".join(rows) + "\n"


def render_run_keys() -> str:
    from metarl.config import key_docs

    return _table(key_docs())


def render_component_keys() -> str:
    """The built-in components of each registry group (metarl's own entry points), with their keys."""
    from metarl import registry
    from metarl.listing import component_key_rows

    parts = []
    groups = [*(g for g in GROUPS if g in registry.REGISTRIES), *(g for g in registry.REGISTRIES if g not in GROUPS)]
    for group in groups:
        parts += [f"### {GROUPS.get(group, group.capitalize())}", ""]
        reg = registry.REGISTRIES[group]
        rows = [row for row in reg.status() if row.package == registry.BUILTIN_DISTRIBUTION]
        if not rows:
            raise RuntimeError(f"no built-in {group} found: is metarl installed (pip install -e .)?")
        for row in rows:
            if row.error is not None:
                raise RuntimeError(f"{group} {row.name!r} does not load: {row.error}")
            own_doc = vars(reg.load(row.name)).get("__doc__") or ""  # not a base class's
            summary = _cell(inspect.cleandoc(own_doc).split("\n\n")[0])
            parts += [f"#### `{row.name}`", "", f"`{row.target}`" + (f": {summary}" if summary else ""), ""]
            parts += [_table(component_key_rows(group, row.name)), ""]
    return "\n".join(parts)


RENDERERS: dict[str, Callable[[], str]] = {
    "cli": render_cli,
    "run-keys": render_run_keys,
    "component-keys": render_component_keys,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for name, render in RENDERERS.items():
        marker = MARKER.format(name)
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
