"""K-armed Bernoulli bandits (Duan et al. 2016, as in pytorch-maml-rl's Bandit-K*).

Task: `{"means": [p_1, ..., p_K]}`, each p_i uniform in [0, 1]. Observation: the constant 1 (shape
(1,)). Action: an arm. Reward: a Bernoulli(p_arm) draw. Each episode is a single pull.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.tasks import TaskDistribution, VectorTaskEnv


class BernoulliBanditEnv(gym.Env):
    """One bandit task as a Gymnasium env (`metarl/Bandit-v0`, task as keyword)."""

    metadata = {"render_modes": []}

    def __init__(self, task: dict[str, Any] | None = None, k: int | None = None) -> None:
        means = np.asarray((task or {}).get("means", np.full(k or 5, 0.5)), dtype=np.float64)
        self.means = means
        self.observation_space = gym.spaces.Box(1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(means))

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.np_random.binomial(1, self.means[int(action)]))
        return np.ones(1, dtype=np.float32), reward, True, False, {}


class BernoulliBanditVectorEnv(VectorTaskEnv):
    """All pulls of all tasks at once; rewards drawn with a torch Generator seeded at reset."""

    def __init__(self, means: torch.Tensor, episodes_per_task: int) -> None:
        self.means = means  # [T, K]
        self.num_tasks, self.episodes_per_task, self.device = means.shape[0], episodes_per_task, means.device
        single = BernoulliBanditEnv(k=means.shape[1])
        self.observation_space, self.action_space = single.observation_space, single.action_space
        self._generator = torch.Generator(device=self.device)

    def _obs(self) -> torch.Tensor:
        return torch.ones(self.num_tasks, self.episodes_per_task, 1, device=self.device)

    def reset(self, seed: int) -> torch.Tensor:
        self._generator.manual_seed(seed)
        return self._obs()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = torch.gather(self.means, 1, actions.long())
        reward = torch.bernoulli(p, generator=self._generator)
        return self._obs(), reward, torch.ones_like(reward, dtype=torch.bool)


class BernoulliBandit(TaskDistribution):
    """K-armed Bernoulli bandits with arm means uniform in [0, 1]."""

    max_episode_steps = 1
    config_file = "configs/bandit.yaml"

    def __init__(self, k: int = 5) -> None:
        if not isinstance(k, int) or k < 2:
            raise ValueError(f"bandit: k must be an integer >= 2, got {k!r}")
        self.k = k

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"means": row.tolist()} for row in rng.uniform(0.0, 1.0, size=(num_tasks, self.k))]

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        return BernoulliBanditEnv(task)

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> BernoulliBanditVectorEnv:
        means = torch.tensor([t["means"] for t in tasks], dtype=torch.float32, device=device)
        return BernoulliBanditVectorEnv(means, episodes_per_task)
