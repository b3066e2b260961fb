"""Shared fixtures: a small navigation meta-batch and its policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.algos.advantages import compute_advantages
from metarl.policies import GaussianMLP
from metarl.policies.batched import detach, stack
from metarl.sampling import Episodes, make_vector_env, sample_episodes
from metarl_envs.navigation import Navigation2D


def small_batch(num_tasks: int = 4, episodes: int = 5, horizon: int = 12, seed: int = 0):
    """A seeded navigation policy and one train batch with advantages, in float64."""
    torch.manual_seed(seed)
    family = Navigation2D()
    env0 = family.make_env({"goal": [0.0, 0.0]})
    policy = GaussianMLP(env0.observation_space, env0.action_space, hidden_sizes=[8, 8]).double()
    tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
    env = make_vector_env(family, tasks, episodes, torch.device("cpu"))
    params = dict(policy.named_parameters())
    episodes_ = sample_episodes(policy, stack(detach(params), num_tasks), _DoubleEnv(env), horizon, seed)
    episodes_ = episodes_.with_advantages(compute_advantages(episodes_, 0.99, 1.0, normalize=True))
    return policy, family, tasks, episodes_


class _DoubleEnv:
    """Wraps a VectorTaskEnv so observations come out in float64 (for finite differences)."""

    def __init__(self, env):
        self.env = env

    def reset(self, seed: int) -> torch.Tensor:
        return self.env.reset(seed).double()

    def step(self, actions: torch.Tensor):
        obs, reward, done = self.env.step(actions.float())
        return obs.double(), reward.double(), done


@pytest.fixture
def batch() -> tuple:
    return small_batch()


def episodes_like(episodes: Episodes, **changes) -> Episodes:
    fields = {k: getattr(episodes, k) for k in ("observations", "actions", "rewards", "mask", "advantages")}
    return Episodes(**{**fields, **changes})
