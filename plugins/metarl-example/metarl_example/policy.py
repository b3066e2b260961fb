"""`tiny-gaussian`: a small Gaussian policy whose standard deviation depends on the state."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal
from torch.nn import functional as F

_ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
    "silu": F.silu,
}


class TinyGaussian(nn.Module):
    """Diagonal Gaussian over Box actions: a shared hidden trunk (one layer by default), a mean head
    and a std head. The std is min_std + (max_std − min_std)·sigmoid(·), so it stays in range without
    clamping. The forward pass has no data-dependent branching, so it runs under `torch.func.vmap`.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: Sequence[int] = (32,),
        activation: str = "tanh",
        min_std: float = 0.05,
        max_std: float = 2.0,
    ) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"tiny-gaussian needs a Box action space, got {action_space!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(_ACTIVATIONS)}")
        if not 0 < min_std < max_std:
            raise ValueError(f"tiny-gaussian needs 0 < min_std < max_std, got {min_std=}, {max_std=}")
        self.action_shape = action_space.shape
        self.activation = _ACTIVATIONS[activation]
        sizes = [gym.spaces.flatdim(observation_space), *hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        action_dim = gym.spaces.flatdim(action_space)
        self.mean = nn.Linear(sizes[-1], action_dim)
        self.std = nn.Linear(sizes[-1], action_dim)
        # Small heads: the initial policy is about N(0, std²) with std in the middle of its range everywhere.
        for head in (self.mean, self.std):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        self.min_std, self.max_std = min_std, max_std

    def forward(self, obs: torch.Tensor) -> Distribution:
        features = obs
        for layer in self.hidden:
            features = self.activation(layer(features))
        shape = (*obs.shape[:-1], *self.action_shape)
        mean = self.mean(features).reshape(shape)
        std = self.min_std + (self.max_std - self.min_std) * torch.sigmoid(self.std(features)).reshape(shape)
        return Independent(Normal(mean, std), len(self.action_shape))
