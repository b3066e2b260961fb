"""The run configuration: defaults, the family's reference YAML, a config file and `--set` overrides.

Precedence, lowest first: the defaults below, the family's shipped config, `--config FILE`,
command-line flags and `--set KEY=VALUE`. Every key and value is checked here, so a typo fails before
anything runs or any directory is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metarl.errors import ConfigError

ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _unit_interval(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


def _open_unit_interval(v: Any) -> bool:
    return _number(v) and 0 < v < 1


def _weights(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(w) for k, w in v.items())


# key -> (check, what is allowed); the dataclass below holds the defaults.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "env": (lambda v: isinstance(v, str) and bool(v), "a task-family name (see `metarl list envs`)"),
    "algo": (lambda v: isinstance(v, str) and bool(v), "a meta-learner name (see `metarl list algorithms`)"),
    "env_kwargs": (lambda v: isinstance(v, dict), "a mapping of keyword arguments for the task family"),
    "policy": (
        lambda v: v is None or isinstance(v, str),
        "a policy name, or null to pick from the action space",
    ),
    "hidden_sizes": (
        lambda v: isinstance(v, list) and all(_positive_int(h) for h in v),
        "a list of positive integers, e.g. [64, 64]",
    ),
    "activation": (lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "meta_batch_size": (_positive_int, "a positive integer"),
    "fast_batch_size": (_positive_int, "a positive integer"),
    "horizon": (
        lambda v: v is None or _positive_int(v),
        "a positive integer, or null for the family's default",
    ),
    "num_inner_steps": (_positive_int, "a positive integer"),
    "inner_lr": (_positive, "a positive number"),
    "first_order": (lambda v: isinstance(v, bool), "true or false"),
    "max_kl": (_positive, "a positive number"),
    "cg_iters": (_positive_int, "a positive integer"),
    "cg_damping": (lambda v: _number(v) and v >= 0, "a non-negative number"),
    "cg_subsample": (lambda v: _number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    "ls_max_steps": (_positive_int, "a positive integer"),
    "ls_backtrack_ratio": (_open_unit_interval, "a number strictly between 0 and 1"),
    "outer_lr": (_positive, "a positive number"),
    "promp_steps": (_positive_int, "a positive integer"),
    "clip_eps": (_open_unit_interval, "a number strictly between 0 and 1"),
    "inner_kl_coef": (lambda v: _number(v) and v >= 0, "a non-negative number"),
    "inner_kl_adaptive": (lambda v: isinstance(v, bool), "true or false"),
    "inner_kl_target": (_positive, "a positive number"),
    "lr_factor": (_open_unit_interval, "a number strictly between 0 and 1"),
    "lr_patience": (_non_negative_int, "a non-negative integer"),
    "exploration_weight": (_number, "a number"),
    "gamma": (_unit_interval, "a number in [0, 1]"),
    "gae_lambda": (_unit_interval, "a number in [0, 1]"),
    "normalize_advantages": (lambda v: isinstance(v, bool), "true or false"),
    "iterations": (_positive_int, "a positive integer"),
    "seed": (_non_negative_int, "a non-negative integer"),
    "device": (lambda v: isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda"), "cpu, cuda or cuda:N"),
    "regularizers": (_weights, "a mapping of regularizer name to weight, e.g. {l2-anchor: 0.1}"),
    "checkpoint_every": (_non_negative_int, "a non-negative integer (0 saves only at the end)"),
    "max_nonfinite_updates": (_positive_int, "a positive integer"),
    "eval_every": (_non_negative_int, "a non-negative integer (0 turns validation off)"),
    "eval_tasks": (_positive_int, "a positive integer"),
}


@dataclass
class Config:
    """Every hyperparameter of a run. Defaults follow the MAML paper's navigation setting."""

    env: str = "navigation-2d"
    algo: str = "maml-trpo"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    meta_batch_size: int = 20
    fast_batch_size: int = 20
    horizon: int | None = None
    num_inner_steps: int = 1
    inner_lr: float = 0.1
    first_order: bool = False
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    cg_subsample: float = 1.0  # fraction of each task's episodes in the Fisher-vector products
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    # Adam outer step (promp, maml-vpg, meta-sgd, e-maml); ProMP's values follow its paper's config
    outer_lr: float = 1e-3
    promp_steps: int = 5
    clip_eps: float = 0.3
    inner_kl_coef: float = 5e-4
    inner_kl_adaptive: bool = False
    inner_kl_target: float = 0.01
    lr_factor: float = 0.5
    lr_patience: int = 10
    exploration_weight: float = 1.0
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    iterations: int = 500
    seed: int = 0
    device: str = "cpu"
    regularizers: dict[str, float] = field(default_factory=dict)
    checkpoint_every: int = 10
    max_nonfinite_updates: int = 5
    eval_every: int = 10
    eval_tasks: int = 20

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and checked."""
        return build_config(self.to_dict(), changes)


KEYS = tuple(f.name for f in dataclasses.fields(Config))
_FLOAT_KEYS = frozenset(f.name for f in dataclasses.fields(Config) if f.type == "float")
assert set(KEYS) == set(_RULES), "every config key needs a rule"


def _check(key: str, value: Any, origin: str) -> Any:
    if key not in _RULES:
        raise ConfigError(f"unknown config key {key!r} in {origin}; allowed keys: {', '.join(KEYS)}")
    if key in _FLOAT_KEYS and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    check, allowed = _RULES[key]
    if not check(value):
        raise ConfigError(f"bad value {value!r} for config key {key!r} in {origin}: expected {allowed}")
    return value


def build_config(*layers: Mapping[str, Any], origins: list[str] | None = None) -> Config:
    """Merge mappings (later ones win) into a checked Config."""
    merged = Config().to_dict()
    for i, layer in enumerate(layers):
        origin = origins[i] if origins else "config"
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{origin} must be a mapping of config keys, got {type(layer).__name__}")
        for key, value in layer.items():
            merged[key] = _check(str(key), value, origin)
    return Config(**merged)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with safe loading; a missing or malformed file is a ConfigError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{line}: {getattr(exc, 'problem', exc)}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def parse_value(where: str, raw: str) -> Any:
    """A command-line value parsed as YAML (`0.1`, `true`, `[32, 32]`, `{split: test}`); empty is None."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{where}: cannot parse value {raw!r}") from None


def parse_set(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings to a mapping, each VALUE parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(f"--set {key}", raw)
    return out


def parse_weights(items: list[str]) -> dict[str, float]:
    """`NAME=WEIGHT` strings (`--regularizer`) to a mapping; WEIGHT defaults to 1."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            out[name.strip()] = float(raw) if sep else 1.0
        except ValueError:
            raise ConfigError(f"--regularizer {name}: weight {raw!r} is not a number") from None
        if not name.strip():
            raise ConfigError(f"--regularizer expects NAME=WEIGHT, got {item!r}")
    return out
