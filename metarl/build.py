"""Assembly of a run from a Config: family, policy, regularizers and learner, each with its own keys.

`build_run(config)` checks every component's keys against the component before anything is built
or written, and returns the parts together with the resolved config (every declared default filled
in, the policy named), which is what a run directory's `config.yaml` records.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl import distributed, registry
from metarl.config import Config
from metarl.errors import ConfigError, PluginError, UnknownNameError
from metarl.hyperparameters import component_keys, resolve_kwargs
from metarl.policies.mlp import default_policy_name
from metarl.regularizers.base import Regularizer
from metarl.tasks import TaskDistribution, check_spaces, observation_dim


def construct(cls: type, what: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate a plugin class; a bad keyword is the user's ConfigError, anything else the plugin's."""
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    try:
        return cls(*args, **kwargs)
    except (ValueError, TypeError, ConfigError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception as exc:
        raise PluginError(f"{what} failed to construct: {type(exc).__name__}: {exc}") from exc


def _owner_of(group: str, exclude: str) -> Callable[[str], str | None]:
    """For error messages: which other installed component of `group` takes a key."""

    def owner(key: str) -> str | None:
        reg = registry.REGISTRIES[group]
        for name in reg.names():
            if name == exclude:
                continue
            try:
                cls = reg.load(name)
            except (PluginError, UnknownNameError):
                continue
            if key in component_keys(cls, reg.positional):
                return f"{reg.kind} {name!r}"
        return None

    return owner


def component_kwargs(group: str, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` of component `name` checked against its keys, declared defaults filled in."""
    reg = registry.REGISTRIES[group]
    return resolve_kwargs(reg.load(name), kwargs, f"{reg.kind} {name!r}", reg.positional, _owner_of(group, name))


def make_family(config: Config) -> TaskDistribution:
    # the registry checked that the class is a TaskDistribution
    family: TaskDistribution = construct(
        registry.envs.load(config.env), f"env {config.env!r} (env_kwargs)", **config.env_kwargs
    )
    return family


def probe_spaces(family: TaskDistribution, name: str) -> tuple[gym.Space[Any], gym.Space[Any]]:
    """Observation and action spaces of the family, from one env built with a throwaway generator."""
    try:
        task = family.sample_tasks(1, np.random.default_rng(0))[0]
        env = family.make_env(task)
    except Exception as exc:
        raise PluginError(f"env {name!r} failed to build an environment: {type(exc).__name__}: {exc}") from exc
    spaces = env.observation_space, env.action_space
    env.close()
    check_spaces(*spaces, where=f"env {name!r}")
    return spaces


def resolve_components(config: Config, action_space: gym.Space[Any]) -> Config:
    """The config with the policy named and every component's keys checked and completed."""
    policy = config.policy or default_policy_name(action_space)
    regularizers = {}
    for name, spec in config.regularizers.items():
        kwargs = {k: v for k, v in spec.items() if k != "weight"}
        regularizers[name] = {"weight": spec["weight"], **component_kwargs("regularizers", name, kwargs)}
    return config.replace(
        policy=policy,
        policy_kwargs=component_kwargs("policies", policy, config.policy_kwargs),
        algo_kwargs=component_kwargs("algorithms", config.algo, config.algo_kwargs),
        regularizers=regularizers,
        logger_kwargs=resolve_logger_kwargs(config.loggers, config.logger_kwargs),
    )


def resolve_logger_kwargs(names: list[str], logger_kwargs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each named logger's keys checked and completed; a logger that cannot run here is refused now,
    before a run directory exists."""
    unused = sorted(set(logger_kwargs) - set(names))
    if unused:
        raise ConfigError(f"logger_kwargs has keys for {unused[0]!r}, which is not in loggers {names}")
    resolved = {}
    for name in names:
        cls = registry.loggers.load(name)
        try:
            getattr(cls, "check_available", lambda: None)()
        except ValueError as exc:
            raise ConfigError(f"logger {name!r}: {exc}") from None
        resolved[name] = component_kwargs("loggers", name, logger_kwargs.get(name, {}))
    return resolved


def make_loggers(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The loggers a resolved config names, each built as `cls(run_dir, config, **its keys)`."""
    kwargs = config.get("logger_kwargs", {})
    return {
        name: construct(registry.loggers.load(name), f"logger {name!r}", run_dir, config, **kwargs.get(name, {}))
        for name in config["loggers"]
    }


def make_policy(config: Config, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> nn.Module:
    """The configured policy (`config.policy` named, as `resolve_components` leaves it)."""
    name = config.policy or default_policy_name(action_space)
    cls = registry.policies.load(name)
    policy: nn.Module = construct(cls, f"policy {name!r}", observation_space, action_space, **config.policy_kwargs)
    _check_policy_output(policy, name, observation_space)
    return policy


def _check_policy_output(policy: nn.Module, name: str, observation_space: gym.Space[Any]) -> None:
    """The contract: forward(obs) is a Distribution with one log-probability per observation."""
    obs = torch.zeros(3, observation_dim(observation_space))
    try:
        with torch.no_grad():
            pi = policy(obs)
            log_prob = pi.log_prob(pi.sample()) if isinstance(pi, torch.distributions.Distribution) else None
    except Exception as exc:
        raise PluginError(f"policy {name!r} failed on a batch of observations: {type(exc).__name__}: {exc}") from exc
    if log_prob is None:
        raise PluginError(f"policy {name!r} returned {type(pi).__name__}, not a torch.distributions.Distribution")
    if tuple(log_prob.shape) != (3,):
        raise PluginError(f"policy {name!r}: log_prob of 3 observations has shape {tuple(log_prob.shape)}, not (3,)")


def make_regularizers(config: Config) -> dict[str, tuple[Regularizer, float]]:
    """Each configured regularizer built with its keys, with its weight β."""
    built = {}
    for name, spec in config.regularizers.items():
        kwargs = {k: v for k, v in spec.items() if k != "weight"}
        regularizer = construct(registry.regularizers.load(name), f"regularizer {name!r}", **kwargs)
        built[name] = (regularizer, float(spec["weight"]))
    return built


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and Python; return the numpy Generator that samples tasks and env seeds."""
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(name: str) -> torch.device:
    """The configured device; under torchrun, joins the process group (each rank on its own GPU)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch.cuda.is_available() is False; use --device cpu")
    return distributed.init_from_env(torch.device(name))


def available_memory(device: torch.device | None = None) -> int | None:
    """Bytes of memory available now (/proc/meminfo's MemAvailable, plus a CUDA device's free memory);
    None where that cannot be read."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is not None and device is not None and device.type == "cuda":
        try:
            available += torch.cuda.mem_get_info(device)[0]
        except Exception:  # no driver at hand: the host's memory alone
            pass
    return available


def check_batch_memory(
    what: str,
    tasks: int,
    episodes: int,
    horizon: int,
    batches: int,
    spaces: tuple[gym.Space[Any], gym.Space[Any]],
    hidden_sizes: Any = None,
    device: torch.device | None = None,
) -> None:
    """Refuse sizes whose batch cannot fit in the memory available, before anything is written.

    The estimate is a lower bound: `batches` batches of `tasks` × `episodes` × `horizon` steps of
    float32 observations, actions, rewards, masks, advantages and one activation per hidden unit, and
    one copy of the policy's parameters per task and batch (`hidden_sizes` of an MLP; none otherwise).
    """
    obs_dim, act_dim = (int(s.n) if isinstance(s, gym.spaces.Discrete) else int(np.prod(s.shape or ())) for s in spaces)
    hidden = [int(h) for h in hidden_sizes] if isinstance(hidden_sizes, (list, tuple)) else []
    widths = [obs_dim, *hidden, act_dim]
    parameters = sum(a * b + b for a, b in zip(widths, widths[1:])) + act_dim
    per_step = obs_dim + act_dim + 3 + sum(hidden)
    needed = 4 * tasks * batches * (episodes * horizon * per_step + parameters)
    available = available_memory(device)
    if available is not None and needed > available:
        raise ConfigError(
            f"{what} needs at least {needed / 2**30:.1f} GiB ({tasks} tasks x {episodes} episodes x {horizon} steps "
            f"x {batches} batches; observations of {obs_dim}, actions of {act_dim}, {parameters} policy parameters "
            f"per task), but {available / 2**30:.1f} GiB of memory is available: use fewer tasks, episodes, "
            "a shorter horizon or a smaller policy"
        )


@dataclass
class Run:
    """The parts of one run, built from a resolved config."""

    config: Config
    device: torch.device
    family: TaskDistribution
    spaces: tuple[gym.Space[Any], gym.Space[Any]]
    rng: np.random.Generator
    policy: nn.Module
    learner: Any  # a metarl.algos.base.MetaLearner


def build_run(config: Config) -> Run:
    """Family, policy, regularizers and learner of `config`; keys checked before anything is built
    that takes time (the learner) or writes."""
    device = resolve_device(config.device)
    family = make_family(config)
    spaces = probe_spaces(family, config.env)
    config = resolve_components(config, spaces[1])
    horizon, hidden = config.horizon_for(family), config.policy_kwargs.get("hidden_sizes")
    shard = -(-config.meta_batch_size // distributed.world_size())  # this process's part of the meta-batch
    batches = config.num_inner_steps + 1
    check_batch_memory("one meta-batch", shard, config.fast_batch_size, horizon, batches, spaces, hidden, device)
    if config.eval_every:
        check_batch_memory("validation", config.eval_tasks, config.fast_batch_size, horizon, 1, spaces, hidden, device)
    rng = seed_everything(config.seed)
    policy = make_policy(config, *spaces).to(device)
    learner = make_learner(config, policy, family, make_regularizers(config), device)
    return Run(config, device, family, spaces, rng, policy, learner)


def make_learner(
    config: Config,
    policy: nn.Module,
    family: TaskDistribution,
    regularizers: dict[str, tuple[Regularizer, float]] | None = None,
    device: torch.device | str = "cpu",
) -> Any:
    """The configured meta-learner, built as `Learner(policy, family, config, regularizers, device,
    **algo_kwargs)` (without keywords when `algo_kwargs` is empty, as for metarl 0.1.0's plugins)."""
    cls = registry.algorithms.load(config.algo)
    what = f"algorithm {config.algo!r}"
    return construct(cls, what, policy, family, config, regularizers or {}, torch.device(device), **config.algo_kwargs)
