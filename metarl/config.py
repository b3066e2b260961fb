"""The run configuration: run-level keys, and the merging of layers into one checked `Config`.

Layers, lowest first: the defaults below, the family's shipped YAML (and its section for the learner),
`--config FILE`, command-line flags and `--set KEY=VALUE`. A component's own hyperparameters live in
`algo_kwargs`, `policy_kwargs`, `env_kwargs` and the per-regularizer mappings; the component declares
them (`metarl.hyperparameters`) and the assembly (`metarl.build`) checks them against it.

A layer may hold `algorithms: {NAME: {KEY: VALUE, ...}}`: the section of the run's learner is merged
right after the layer's other keys (rl-baselines3-zoo's per-algorithm hyperparameter files).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metarl.errors import ConfigError, short_repr
from metarl.hyperparameters import (
    BOOLEAN,
    MAX_EPISODES,
    MAX_HORIZON,
    MAX_INNER_STEPS,
    MAX_ITERATIONS,
    MAX_TASKS,
    POSITIVE,
    SEED,
    UNIT_INTERVAL,
    Check,
    non_negative_int,
    positive_int,
)

SECTIONS_KEY = "algorithms"
#: mappings merged key by key across layers (a later layer adds or replaces single keys)
NESTED_KEYS = ("env_kwargs", "algo_kwargs", "policy_kwargs", "regularizers", "logger_kwargs")

#: keys of metarl ≤ 0.1.0's flat config that now belong to a component, with their old defaults
LEGACY_ALGO_KEYS: dict[str, Any] = {
    "max_kl": 0.01,
    "cg_iters": 10,
    "cg_damping": 1e-5,
    "cg_subsample": 1.0,
    "ls_max_steps": 15,
    "ls_backtrack_ratio": 0.8,
    "outer_lr": 1e-3,
    "promp_steps": 5,
    "clip_eps": 0.3,
    "inner_kl_coef": 5e-4,
    "inner_kl_adaptive": False,
    "inner_kl_target": 0.01,
    "lr_factor": 0.5,
    "lr_patience": 10,
    "exploration_weight": 1.0,
}
LEGACY_POLICY_KEYS: dict[str, Any] = {"hidden_sizes": [64, 64], "activation": "tanh"}


def _key(default: Any, check: Check, doc: str) -> Any:
    """A run-level key: its default, its check and a one-line doc, declared in one place."""
    factory = (lambda: type(default)(default)) if isinstance(default, (dict, list)) else None
    meta = {"check": check, "doc": doc}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


def _mapping_with_str_keys(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


NAME = Check(lambda v: isinstance(v, str) and bool(v), "a non-empty name")
OPTIONAL_NAME = Check(lambda v: v is None or (isinstance(v, str) and bool(v)), "a name, or null")
KWARGS = Check(_mapping_with_str_keys, "a mapping of keyword arguments, e.g. {key: value}")
TASKS = positive_int(MAX_TASKS)
EPISODES = positive_int(MAX_EPISODES)
ITERATIONS = positive_int(MAX_ITERATIONS)
EVERY = non_negative_int(MAX_ITERATIONS)
HORIZON = Check(
    lambda v: v is None or positive_int(MAX_HORIZON).test(v), f"a positive integer up to {MAX_HORIZON}, or null"
)
MAX_WORKERS = 4096
WORKERS = Check(
    lambda v: v is None or positive_int(MAX_WORKERS).test(v), f"a positive integer up to {MAX_WORKERS}, or null"
)
DEVICE = Check(lambda v: isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda"), "cpu, cuda or cuda:N")
NAMES = Check(
    lambda v: isinstance(v, list) and all(isinstance(n, str) and n for n in v) and len(set(v)) == len(v),
    "a list of distinct names, e.g. [tensorboard, csv]",
)
PER_NAME_KWARGS = Check(
    lambda v: _mapping_with_str_keys(v) and all(_mapping_with_str_keys(s) for s in v.values()),
    "a mapping of name to {key: value}",
)
REGULARIZERS = Check(
    lambda v: _mapping_with_str_keys(v) and all(_mapping_with_str_keys(s) and "weight" in s for s in v.values()),
    "a mapping of regularizer name to a weight or to {weight: W, KEY: VALUE, ...}",
)


@dataclass
class Config:
    """Every run-level key of a run; components' keys are in the `*_kwargs` mappings."""

    env: str = _key("navigation-2d", NAME, "task family (`metarl list envs`)")
    env_kwargs: dict[str, Any] = _key({}, KWARGS, "the task family's constructor keywords")
    algo: str = _key("maml-trpo", NAME, "meta-learner (`metarl list algorithms`)")
    algo_kwargs: dict[str, Any] = _key({}, KWARGS, "the meta-learner's keys (`metarl list algorithms --verbose`)")
    policy: str | None = _key(None, OPTIONAL_NAME, "policy; null picks gaussian-mlp or categorical-mlp")
    policy_kwargs: dict[str, Any] = _key({}, KWARGS, "the policy's keys (`metarl list policies --verbose`)")
    regularizers: dict[str, dict[str, Any]] = _key(
        {}, REGULARIZERS, "name -> weight β or {weight: β, KEY: VALUE}: β·R added to the outer loss"
    )
    meta_batch_size: int = _key(20, TASKS, "tasks per meta-batch")
    fast_batch_size: int = _key(20, EPISODES, "episodes per task and inner step")
    horizon: int | None = _key(None, HORIZON, "episode length; null: the family's max_episode_steps")
    num_inner_steps: int = _key(1, positive_int(MAX_INNER_STEPS), "inner gradient steps")
    inner_lr: float = _key(0.1, POSITIVE, "inner step size α")
    first_order: bool = _key(False, BOOLEAN, "drop the second-order terms of the inner step")
    gamma: float = _key(0.99, UNIT_INTERVAL, "discount")
    gae_lambda: float = _key(1.0, UNIT_INTERVAL, "GAE λ (the linear feature baseline per task)")
    normalize_advantages: bool = _key(True, BOOLEAN, "standardise advantages per task")
    iterations: int = _key(500, ITERATIONS, "meta-iterations")
    seed: int = _key(0, SEED, "the one seed: tasks, env seeds, initial weights")
    device: str = _key("cpu", DEVICE, "torch device")
    num_workers: int | None = _key(
        None,
        WORKERS,
        "processes stepping a family's make_env envs; null: one per core (÷ local ranks), 1: in this process",
    )
    worker_timeout: float = _key(60.0, POSITIVE, "seconds one env call in a worker may take before the run stops")
    checkpoint_every: int = _key(10, EVERY, "iterations between checkpoints (0: only at the end)")
    max_nonfinite_updates: int = _key(5, ITERATIONS, "updates refused in a row for NaN/Inf before the run stops")
    eval_every: int = _key(10, EVERY, "iterations between validations on held-out tasks (0: none)")
    eval_tasks: int = _key(20, TASKS, "validation tasks")
    loggers: list[str] = _key(["tensorboard", "csv"], NAMES, "where the scalars go (`metarl list loggers`)")
    logger_kwargs: dict[str, dict[str, Any]] = _key(
        {}, PER_NAME_KWARGS, "logger name -> its keys, e.g. {wandb: {project: P}}"
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and checked (mappings replaced whole)."""
        return build_config({**self.to_dict(), **changes})

    def horizon_for(self, family: Any) -> int:
        """The episode length on `family`: `horizon`, or the family's `max_episode_steps` when null."""
        return self.horizon or family.max_episode_steps

    def __getattr__(self, name: str) -> Any:
        # metarl 0.1.0 learners read their keys from the flat config: keep that working for plugins
        if name in LEGACY_ALGO_KEYS:
            return self.__dict__.get("algo_kwargs", {}).get(name, LEGACY_ALGO_KEYS[name])
        if name in LEGACY_POLICY_KEYS:
            return self.__dict__.get("policy_kwargs", {}).get(name, LEGACY_POLICY_KEYS[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
KEYS = tuple(FIELDS)


def key_docs() -> list[tuple[str, Any, str, str]]:
    """(key, default, allowed, doc) of every run-level key, in declaration order."""
    defaults = Config().to_dict()
    return [(n, defaults[n], f.metadata["check"].allowed, f.metadata["doc"]) for n, f in FIELDS.items()]


def _normalize_regularizers(value: Any, origin: str) -> Any:
    """`NAME: WEIGHT` entries as `NAME: {weight: WEIGHT}`; anything else is left for the check."""
    if not isinstance(value, dict):
        return value
    out = {}
    for name, spec in value.items():
        spec = {"weight": spec} if isinstance(spec, (int, float)) and not isinstance(spec, bool) else spec
        if isinstance(spec, dict) and "weight" in spec:
            weight = spec["weight"]
            if not (isinstance(weight, (int, float)) and not isinstance(weight, bool)):
                raise ConfigError(
                    f"bad weight {short_repr(weight)} for regularizer {short_repr(name)} in {origin}: expected a number"
                )
            spec = {**spec, "weight": float(weight)}
        out[name] = spec
    return out


def _check(key: str, value: Any, origin: str) -> Any:
    if key not in FIELDS:
        raise ConfigError(f"unknown config key {short_repr(key)} in {origin}; allowed keys: {', '.join(KEYS)}")
    if key == "regularizers":
        value = _normalize_regularizers(value, origin)
    try:
        return FIELDS[key].metadata["check"](value)
    except ValueError as exc:
        raise ConfigError(f"bad value {short_repr(value)} for config key {key!r} in {origin}: expected {exc}") from None


def _accepts(group: str, name: str | None, key: str) -> bool:
    """Whether the component `name` of a registry group takes `key` (None: the built-in default policies)."""
    from metarl import registry
    from metarl.hyperparameters import component_keys

    if name is None:
        return True
    reg = registry.REGISTRIES[group]
    return key in component_keys(reg.load(name), reg.positional)


def migrate_layer(layer: Mapping[str, Any], lenient: bool, algo: str, policy: str | None) -> dict[str, Any]:
    """Move metarl 0.1.0's flat component keys into `algo_kwargs` / `policy_kwargs`.

    Strict (a user's layer): every such key moves, and the component then checks it. Lenient (a
    family's shipped YAML, an old run's config.yaml, which held every learner's keys): a key moves only
    if the run's learner or policy takes it, as metarl 0.1.0 passed `hidden_sizes` only when accepted;
    the same holds for the layer's `policy_kwargs`.
    """
    out = {k: v for k, v in layer.items() if k not in LEGACY_ALGO_KEYS and k not in LEGACY_POLICY_KEYS}
    if lenient and isinstance(out.get("policy_kwargs"), dict):
        # a family's YAML sets up the default policy: a policy chosen instead gets only the keys it takes
        out["policy_kwargs"] = {k: v for k, v in out["policy_kwargs"].items() if _accepts("policies", policy, k)}
    for legacy, target, group, name in (
        (LEGACY_ALGO_KEYS, "algo_kwargs", "algorithms", algo),
        (LEGACY_POLICY_KEYS, "policy_kwargs", "policies", policy),
    ):
        moved = {k: v for k, v in layer.items() if k in legacy and (not lenient or _accepts(group, name, k))}
        if moved:
            nested = out.get(target, {})
            out[target] = {**moved, **nested} if isinstance(nested, dict) else nested
    return out


def _last(layers: Sequence[Mapping[str, Any]], key: str, default: Any, algo: str | None = None) -> Any:
    """The value of `key` that the merge will end with (a learner's section counts after its layer)."""
    value = default
    for layer in layers:
        value = layer.get(key, value)
        if algo is not None:
            section = layer.get(SECTIONS_KEY, {})
            if isinstance(section, dict) and isinstance(section.get(algo), dict):
                value = section[algo].get(key, value)
    return value


def _sections(layer: Mapping[str, Any], origin: str) -> dict[str, dict[str, Any]]:
    sections = layer.get(SECTIONS_KEY, {})
    if not (isinstance(sections, dict) and all(isinstance(s, dict) for s in sections.values())):
        raise ConfigError(f"{SECTIONS_KEY!r} in {origin} must map learner names to mappings of config keys")
    for name, section in sections.items():
        for reserved in ("algo", "env", SECTIONS_KEY):
            if reserved in section:
                raise ConfigError(f"the {short_repr(name)} section in {origin} cannot set {reserved!r}")
    return sections


def build_config(
    *layers: Mapping[str, Any],
    origins: Sequence[str] | None = None,
    reference: bool = False,
    lenient: Sequence[bool] | None = None,
) -> Config:
    """Merge mappings (later ones win; the `*_kwargs` and `regularizers` mappings key by key) into a
    checked Config.

    With `reference`, the family's shipped YAML (`TaskDistribution.reference_config`) of the env the
    layers name comes first. `lenient[i]` marks a layer whose metarl 0.1.0 flat keys are kept only
    where the run's components take them (see `migrate_layer`).
    """
    stack: list[Mapping[str, Any]] = list(layers)
    origins = list(origins) if origins else ["config"] * len(stack)
    flags = list(lenient) if lenient else [False] * len(stack)
    for layer, origin in zip(stack, origins):
        if not isinstance(layer, Mapping):
            raise ConfigError(f"{origin} must be a mapping of config keys, got {type(layer).__name__}")
    if reference:
        env = _last(stack, "env", None)
        if env is None:
            raise ConfigError("no task family given: pass --env NAME (see `metarl list envs`)")
        env = _check("env", env, "config")
        stack, origins, flags = (
            [_reference_config(env), *stack],
            [f"reference config of {env!r}", *origins],
            [True, *flags],
        )
    algo = _check("algo", _last(stack, "algo", Config.algo), "config")
    policy = _check("policy", _last(stack, "policy", Config.policy, algo), "config")
    merged = Config().to_dict()
    for layer, origin, soft in zip(stack, origins, flags):
        section = _sections(layer, origin).get(algo, {})
        base = {k: v for k, v in layer.items() if k != SECTIONS_KEY}
        for part, where in ((base, origin), (section, f"the {algo!r} section of {origin}")):
            for key, value in migrate_layer(part, soft, algo, policy).items():
                value = _check(str(key), value, where)
                check_finite(value, str(key), where)  # anywhere in it: env_kwargs, nested lists
                if key in NESTED_KEYS:
                    value = _merge_nested(key, merged[key], value)
                merged[key] = value
    return Config(**merged)


def _reference_config(env: str) -> dict[str, Any]:
    """The shipped YAML of family `env`; one it cannot read is the plugin's one-line error."""
    from metarl import registry
    from metarl.errors import PluginError

    family = registry.envs.load(env)
    try:
        reference: dict[str, Any] = family.reference_config()
        return reference
    except Exception as exc:
        package = registry.envs.package_of(env)
        raise PluginError(
            f"env {env!r} (package {package}): its reference config {family.config_file!r} cannot be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _merge_nested(key: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    if key not in ("regularizers", "logger_kwargs"):
        return {**old, **new}
    return {name: {**old.get(name, {}), **spec} for name, spec in {**old, **new}.items()}


#: the most bytes of a YAML file, values (scalars, items, entries) a YAML document may expand to
#: through its aliases, and levels of nesting
MAX_YAML_BYTES = 10 * 2**20
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


def walk(value: Any, where: str, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key path, value) of `value` and of everything nested in it, depth first.

    Stops with a ConfigError after MAX_YAML_NODES values or MAX_YAML_DEPTH levels: YAML aliases make
    a small document a tree of 10⁹ values (the "billion laughs"), which no check, copy or message may
    expand.
    """
    budget = MAX_YAML_NODES
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        at, node, depth = stack.pop()
        yield at, node
        if not isinstance(node, (dict, list, tuple)):
            continue
        budget -= len(node)
        if budget < 0:
            raise ConfigError(
                f"{where} expands to more than {MAX_YAML_NODES} values (nested YAML aliases?): refused as too large"
            )
        if depth >= MAX_YAML_DEPTH:
            raise ConfigError(f"{where} nests values more than {MAX_YAML_DEPTH} levels deep: refused")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        prefix = f"{at}." if at else ""
        stack.extend((f"{prefix}{k}", v, depth + 1) for k, v in reversed(list(items)))


def check_finite(value: Any, path: str, where: str) -> None:
    """A ConfigError naming the dotted key path of the first NaN or infinite number in `value`."""
    for at, node in walk(value, where, path):
        if isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{short_repr(at)} in {where} is {node}: every number must be finite")


def _safe_load(text: str, where: str) -> Any:
    """yaml.safe_load, refusing documents that expand beyond MAX_YAML_NODES values (see `walk`)."""
    try:
        data = yaml.safe_load(text)
    except (RecursionError, ValueError) as exc:  # nesting beyond the parser's recursion; an int > 4300 digits
        raise ConfigError(f"{where} cannot be parsed: {type(exc).__name__}: {short_repr(str(exc))}") from None
    for _ in walk(data, where):
        pass
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with safe loading; a missing, malformed or oversized file is a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError(f"config file {str(path)!r} is larger than {MAX_YAML_BYTES // 2**20} MiB: refused")
        data = _safe_load(raw.decode(), f"config file {str(path)!r}")
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
        return _safe_load(raw, where) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{where}: cannot parse value {short_repr(raw)}") from None


def parse_set(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings to a mapping, each VALUE parsed as YAML; `A.B=VALUE` sets key B of mapping A
    (`--set algo_kwargs.max_kl=0.02`, `--set regularizers.entropy.weight=0.1`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = [part.strip() for part in key.split(".")]
        if not sep or not all(path):
            raise ConfigError(f"--set expects KEY=VALUE, got {short_repr(item)}")
        target = out
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                used = f"--set {short_repr(key)}: {short_repr(part)}"
                raise ConfigError(f"{used} is set to a value and used as a mapping")
        target[path[-1]] = parse_value(f"--set {key}", raw)
    return out


def parse_weights(items: list[str]) -> dict[str, float]:
    """`NAME=WEIGHT` strings (`--regularizer`) to a mapping; WEIGHT defaults to 1."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            out[name.strip()] = float(raw) if sep else 1.0
        except ValueError:
            raise ConfigError(f"--regularizer {short_repr(name)}: weight {short_repr(raw)} is not a number") from None
        if not math.isfinite(out[name.strip()]):
            raise ConfigError(f"--regularizer {short_repr(name)}: weight {short_repr(raw)} is not finite")
        if not name.strip():
            raise ConfigError(f"--regularizer expects NAME=WEIGHT, got {short_repr(item)}")
    return out
