"""Environments for a whole meta-batch: `num_tasks` × `episodes_per_task` episodes stepped together.

`metarl.tasks.VectorTaskEnv` is the interface of a family's batched fast path (tensors in, tensors
out, on the run's device). `GymVectorTaskEnv` is the generic path over `TaskDistribution.make_env`, which every
family, third-party ones included, supports. Envs that step on the host use `to_device` and
`step_to_device`: one host→device copy per time step for the whole meta-batch.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl import registry
from metarl.errors import PluginError, short_repr
from metarl.tasks import TaskDistribution, VectorTaskEnv, check_spaces, observation_dim


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One copy of a host array to `device`; asynchronous from pinned memory when it is a GPU."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def step_to_device(
    observations: np.ndarray, rewards: np.ndarray, dones: np.ndarray, shape: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A step's [N, obs_dim] observations, [N] rewards and [N] dones, packed into one float32 array
    for a single copy to `device`, returned shaped [*shape, obs_dim], [*shape] and [*shape]."""
    packed = np.concatenate(
        [observations.reshape(len(rewards), -1), rewards.reshape(-1, 1), dones.reshape(-1, 1)], axis=1, dtype=np.float32
    )
    step = to_device(packed, device).view(*shape, -1)
    return step[..., :-2], step[..., -2], step[..., -1] > 0.5


def _to_float(space: gym.Space[Any], obs: np.ndarray) -> np.ndarray:
    if isinstance(space, gym.spaces.Discrete):
        one_hot: np.ndarray = np.eye(int(space.n), dtype=np.float32)[int(obs) - int(space.start)]
        return one_hot
    return np.asarray(obs, dtype=np.float32).reshape(-1)


class GymVectorTaskEnv(VectorTaskEnv):
    """The generic path: one `make_env` instance per (task, episode), stepped in a Python loop."""

    def __init__(
        self,
        family: TaskDistribution,
        tasks: list[dict[str, Any]],
        episodes_per_task: int,
        device: torch.device,
    ) -> None:
        self.num_tasks, self.episodes_per_task, self.device = len(tasks), episodes_per_task, device
        self.family, self.tasks = family, tasks
        self.envs = [family.make_env(task) for task in tasks for _ in range(episodes_per_task)]
        first = self.envs[0]
        self.observation_space, self.action_space = first.observation_space, first.action_space
        check_spaces(self.observation_space, self.action_space, f"env of {type(family).__name__}")
        self._obs_dim = observation_dim(self.observation_space)
        self._done = np.zeros(len(self.envs), dtype=bool)
        self._success = np.zeros(len(self.envs), dtype=bool)
        self._reports_success = False

    def reset(self, seed: int) -> torch.Tensor:
        self._done[:] = False
        self._success[:] = False
        rows = [self._observation(env.reset(seed=seed + i)[0], i) for i, env in enumerate(self.envs)]
        array = np.stack(rows).reshape(self.num_tasks, self.episodes_per_task, self._obs_dim)
        return to_device(array, self.device)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = actions.detach().cpu().numpy().reshape(len(self.envs), *(self.action_space.shape or ()))
        if isinstance(self.action_space, gym.spaces.Box):
            flat = np.clip(flat, self.action_space.low, self.action_space.high)
        rows, rewards = [], np.zeros(len(self.envs), dtype=np.float32)
        zero = np.zeros(self._obs_dim, dtype=np.float32)
        for i, env in enumerate(self.envs):
            if self._done[i]:
                rows.append(zero)
                continue
            action = int(flat[i]) if isinstance(self.action_space, gym.spaces.Discrete) else flat[i]
            obs, reward, terminated, truncated, info = env.step(action)
            rows.append(self._observation(obs, i))
            if (shape := np.shape(np.asarray(reward))) != ():
                raise self._broken(i, f"returned a reward of shape {shape}, not a number")
            rewards[i] = reward
            self._done[i] = terminated or truncated
            if "success" in info:
                self._reports_success = True
                self._success[i] |= bool(info["success"])
        return step_to_device(
            np.stack(rows), rewards, self._done, (self.num_tasks, self.episodes_per_task), self.device
        )

    def _observation(self, obs: Any, index: int) -> np.ndarray:
        """Env `index`'s observation as a float vector; one that does not fit the space names the env."""
        try:
            row = _to_float(self.observation_space, obs)
        except (TypeError, ValueError, IndexError) as exc:
            raise self._broken(
                index, f"returned an observation metarl cannot read ({type(exc).__name__}: {exc})"
            ) from None
        if row.size != self._obs_dim:
            raise self._broken(
                index, f"returned an observation of {row.size} values, but its observation space has {self._obs_dim}"
            )
        return row

    def _broken(self, index: int, what: str) -> PluginError:
        task = self.tasks[index // self.episodes_per_task]
        package = registry.distribution_of(self.family)
        return PluginError(
            f"env of family {type(self.family).__name__} (package {package}) for task {short_repr(task)} {what}"
        )

    def episode_successes(self) -> torch.Tensor | None:
        if not self._reports_success:
            return None
        return torch.from_numpy(self._success.reshape(self.num_tasks, self.episodes_per_task)).float().to(self.device)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vector_env(
    family: TaskDistribution, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
) -> VectorTaskEnv:
    """The family's batched fast path when it has one, else the generic `make_env` path."""
    env = family.make_vector_env(tasks, episodes_per_task, device)
    return env if env is not None else GymVectorTaskEnv(family, tasks, episodes_per_task, device)
