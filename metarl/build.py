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
    return construct(registry.envs.load(config.env), f"env {config.env!r} (env_kwargs)", **config.env_kwargs)


def probe_spaces(family: TaskDistribution, name: str) -> tuple[gym.Space, gym.Space]:
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


def resolve_components(config: Config, action_space: gym.Space) -> Config:
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
    )


def make_policy(config: Config, observation_space: gym.Space, action_space: gym.Space) -> nn.Module:
    """The configured policy (`config.policy` named, as `resolve_components` leaves it)."""
    name = config.policy or default_policy_name(action_space)
    cls = registry.policies.load(name)
    policy = construct(cls, f"policy {name!r}", observation_space, action_space, **config.policy_kwargs)
    _check_policy_output(policy, name, observation_space)
    return policy


def _check_policy_output(policy: nn.Module, name: str, observation_space: gym.Space) -> None:
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


@dataclass
class Run:
    """The parts of one run, built from a resolved config."""

    config: Config
    device: torch.device
    family: TaskDistribution
    spaces: tuple[gym.Space, gym.Space]
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
