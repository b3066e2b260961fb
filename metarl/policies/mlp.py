"""Gaussian and categorical MLP policies.

Plain `nn.Module`s: the core adapts them with `torch.func.functional_call`, so they take no `params=`.
Observations may carry any leading batch dimensions; `log_prob` returns one value per observation.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from metarl.hyperparameters import POSITIVE, POSITIVE_INTS, Hyperparameter, configure, one_of
from metarl.tasks import observation_dim

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def default_policy_name(action_space: gym.Space[Any]) -> str:
    """The built-in policy for an action space."""
    if isinstance(action_space, gym.spaces.Box):
        return "gaussian-mlp"
    if isinstance(action_space, gym.spaces.Discrete):
        return "categorical-mlp"
    raise TypeError(f"unsupported action space {action_space!r}: metarl supports Box and Discrete")


def _mlp(in_dim: int, hidden_sizes: list[int], activation: str) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [_linear(in_dim, size), _ACTIVATIONS[activation]()]
        in_dim = size
    return nn.Sequential(*layers), in_dim


def _linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear layer with Xavier-uniform weights and zero biases (as the MAML reference policies)."""
    linear = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class MLPPolicy(nn.Module):
    """The keys the built-in MLP policies share; `policy_kwargs` in the config."""

    takes_declared_keys_only = True  # **hyperparameters holds only the declared keys

    hidden_sizes = Hyperparameter([64, 64], POSITIVE_INTS, "widths of the hidden layers")
    activation = Hyperparameter("tanh", one_of(*_ACTIVATIONS), "activation of the hidden layers")

    def __init__(self, **hyperparameters: object) -> None:
        super().__init__()
        configure(self, hyperparameters, f"policy {type(self).__name__}")


class GaussianMLP(MLPPolicy):
    """Diagonal Gaussian over Box actions: MLP mean, state-independent learned log std."""

    init_std = Hyperparameter(1.0, POSITIVE, "initial standard deviation of every action dimension")
    min_std = Hyperparameter(1e-6, POSITIVE, "lower bound of the standard deviation")

    def __init__(
        self, observation_space: gym.Space[Any], action_space: gym.Space[Any], **hyperparameters: object
    ) -> None:
        super().__init__(**hyperparameters)
        if not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"gaussian-mlp needs a Box action space, got {action_space!r}")
        self.action_shape = action_space.shape
        self.trunk, width = _mlp(observation_dim(observation_space), self.hidden_sizes, self.activation)
        self.mean = _linear(width, int(np.prod(action_space.shape)))
        self.log_std = nn.Parameter(torch.full((int(np.prod(action_space.shape)),), math.log(self.init_std)))
        self.min_log_std = math.log(self.min_std)

    def forward(self, obs: torch.Tensor) -> Distribution:
        mean = self.mean(self.trunk(obs)).reshape(*obs.shape[:-1], *self.action_shape)
        std = self.log_std.clamp(min=self.min_log_std).exp().reshape(self.action_shape)
        return Independent(Normal(mean, std.expand_as(mean)), len(self.action_shape))


class CategoricalMLP(MLPPolicy):
    """Categorical over Discrete actions: MLP logits."""

    def __init__(
        self, observation_space: gym.Space[Any], action_space: gym.Space[Any], **hyperparameters: object
    ) -> None:
        super().__init__(**hyperparameters)
        if not isinstance(action_space, gym.spaces.Discrete):
            raise TypeError(f"categorical-mlp needs a Discrete action space, got {action_space!r}")
        self.trunk, width = _mlp(observation_dim(observation_space), self.hidden_sizes, self.activation)
        self.logits = _linear(width, int(action_space.n))

    def forward(self, obs: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits(self.trunk(obs)))
