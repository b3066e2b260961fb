"""Random tabular MDPs (Duan et al. 2016, as in pytorch-maml-rl's TabularMDP-v0).

Task: `{"transitions": P[s][a][s'], "rewards_mean": R[s][a]}` with each P[s][a] ~ Dirichlet(1) and
R[s][a] ~ N(1, 1). Every episode starts in state 0. Observation: the state index as a float (shape
(1,)). Reward: N(R[s][a], 1). Episodes never terminate; horizon 10.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.tasks import TaskDistribution, VectorTaskEnv


class TabularMDPEnv(gym.Env):
    """One tabular MDP as a Gymnasium env (`metarl/TabularMDP-v0`, task as keyword)."""

    metadata = {"render_modes": []}

    def __init__(self, task: dict[str, Any] | None = None, num_states: int = 10, num_actions: int = 5) -> None:
        if task is None:
            task = {
                "transitions": np.full((num_states, num_actions, num_states), 1.0 / num_states),
                "rewards_mean": np.ones((num_states, num_actions)),
            }
        self.transitions = np.asarray(task["transitions"], dtype=np.float64)
        self.rewards_mean = np.asarray(task["rewards_mean"], dtype=np.float64)
        num_states, num_actions = self.rewards_mean.shape
        self.observation_space = gym.spaces.Box(0.0, float(num_states - 1), shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(num_actions)
        self._state = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._state = 0
        return np.array([self._state], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        reward = float(self.np_random.normal(self.rewards_mean[self._state, a], 1.0))
        p = self.transitions[self._state, a]
        self._state = int(self.np_random.choice(len(p), p=p / p.sum()))
        return np.array([self._state], dtype=np.float32), reward, False, False, {}


class TabularMDPVectorEnv(VectorTaskEnv):
    """All episodes of all MDPs at once: states [T, E], tables indexed per task."""

    def __init__(self, transitions: torch.Tensor, rewards_mean: torch.Tensor, episodes_per_task: int) -> None:
        self.transitions, self.rewards_mean = transitions, rewards_mean  # [T, S, A, S], [T, S, A]
        self.num_tasks, num_states, num_actions = rewards_mean.shape
        self.episodes_per_task, self.device = episodes_per_task, rewards_mean.device
        single = TabularMDPEnv(num_states=num_states, num_actions=num_actions)
        self.observation_space, self.action_space = single.observation_space, single.action_space
        self._generator = torch.Generator(device=self.device)
        self._task_index = torch.arange(self.num_tasks, device=self.device).unsqueeze(1)
        self._state = torch.zeros(self.num_tasks, episodes_per_task, dtype=torch.long, device=self.device)

    def _obs(self) -> torch.Tensor:
        return self._state.unsqueeze(-1).float()

    def reset(self, seed: int) -> torch.Tensor:
        self._generator.manual_seed(seed)
        self._state = torch.zeros_like(self._state)
        return self._obs()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = actions.long()
        mean = self.rewards_mean[self._task_index, self._state, a]
        reward = mean + torch.randn(mean.shape, generator=self._generator, device=self.device)
        p = self.transitions[self._task_index, self._state, a]  # [T, E, S]
        self._state = torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=self._generator).view_as(a)
        return self._obs(), reward, torch.zeros_like(reward, dtype=torch.bool)


class TabularMDP(TaskDistribution):
    """Random MDPs with `num_states` states and `num_actions` actions."""

    max_episode_steps = 10
    config_file = "configs/tabular-mdp.yaml"

    def __init__(self, num_states: int = 10, num_actions: int = 5) -> None:
        for name, value in (("num_states", num_states), ("num_actions", num_actions)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"tabular-mdp: {name} must be an integer >= 2, got {value!r}")
        self.num_states, self.num_actions = num_states, num_actions

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        s, a = self.num_states, self.num_actions
        transitions = rng.dirichlet(np.ones(s), size=(num_tasks, s, a))
        rewards_mean = rng.normal(1.0, 1.0, size=(num_tasks, s, a))
        return [{"transitions": p.tolist(), "rewards_mean": r.tolist()} for p, r in zip(transitions, rewards_mean)]

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        return TabularMDPEnv(task)

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> TabularMDPVectorEnv:
        transitions = torch.tensor([t["transitions"] for t in tasks], dtype=torch.float32, device=device)
        rewards_mean = torch.tensor([t["rewards_mean"] for t in tasks], dtype=torch.float32, device=device)
        return TabularMDPVectorEnv(transitions, rewards_mean, episodes_per_task)
