"""`metarl list`: installed components and their keys, the run-level keys, the shipped runs."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from metarl import pretrained, registry
from metarl.checkpoint import best_checkpoint_path
from metarl.config import key_docs, load_yaml
from metarl.errors import short_repr
from metarl.hyperparameters import component_keys


def print_listing(group: str | None, verbose: bool) -> None:
    """`metarl list [GROUP] [--verbose]`: installed components (with their keys), the run-level keys
    (`config`) or the shipped runs (`pretrained`); every registry group when `group` is None."""
    if group == "pretrained":
        _list_pretrained()
    elif group == "config":
        print("run-level config keys:")
        print(_format_keys(key_docs()))
    else:
        _list_components([group] if group else list(registry.REGISTRIES), verbose)


def _list_components(groups: list[str], verbose: bool) -> None:
    for name in groups:
        print(f"{name}:")
        rows = registry.REGISTRIES[name].status()
        # a refused name (not a safe path segment) is shown quoted and bounded, never as raw text
        labels = [r.name if registry.name_problem(r.name) is None else short_repr(r.name, 80) for r in rows]
        width = max((len(label) for label in labels), default=0)
        for row, label in zip(rows, labels):
            state = "ok" if row.error is None else f"broken: {row.error}"
            print(f"  {label:<{width}}  {row.package} {row.version}  {state}")
            if verbose and row.error is None:
                print(_format_keys(component_key_rows(name, row.name), indent="      "))
        if not rows:
            print("  (none)")


def _list_pretrained() -> None:
    print("pretrained (metarl evaluate pretrained:NAME, metarl adapt pretrained:NAME):")
    for name in pretrained.names():
        folder = pretrained.root() / name
        config = load_yaml(folder / "config.yaml")
        best = torch.load(best_checkpoint_path(folder), map_location="cpu", weights_only=True)
        print(
            f"  {name}  env {config['env']}, algo {config['algo']}, best checkpoint at iteration {best['iteration']} "
            f"(validation return after adaptation {best['best_validation']:.2f})"
        )
    if not pretrained.names():
        print("  (none)")


def component_key_rows(group: str, name: str) -> list[tuple[str, Any, str, str]]:
    """(key, default, allowed, doc) of each key of component `name` in registry `group`."""
    reg = registry.REGISTRIES[group]
    keys = component_keys(reg.load(name), reg.positional).values()
    return [(k.name, "required" if k.default is inspect.Parameter.empty else k.default, k.allowed, k.doc) for k in keys]


def _format_keys(keys: list[tuple[str, Any, str, str]], indent: str = "  ") -> str:
    """One line per key: name, default, what is allowed and its doc."""
    if not keys:
        return f"{indent}(no keys)"
    width = max(len(k[0]) for k in keys)
    lines = []
    for name, default, allowed, doc in keys:
        described = f"{doc} ({allowed})" if doc else allowed
        lines.append(f"{indent}{name:<{width}}  default {default!r}: {described}")
    return "\n".join(lines)
