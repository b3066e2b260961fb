"""Environments for a whole meta-batch: `num_tasks` × `episodes_per_task` episodes stepped together.

`metarl.tasks.VectorTaskEnv` is the interface of a family's batched fast path (tensors in, tensors
out, on the run's device). `GymVectorTaskEnv` is the generic path over `TaskDistribution.make_env`, which every
family, third-party ones included, supports; `EnvSlice` steps a contiguous run of its envs, here in
this process and in `metarl.sampling.workers` in worker processes. Envs that step on the host use
`to_device` and `step_to_device`: one host→device copy per time step for the whole meta-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

from metarl import registry
from metarl.errors import MetarlError, PluginError, first_line, short_repr
from metarl.tasks import TaskDistribution, VectorTaskEnv, check_spaces, observation_dim

if TYPE_CHECKING:
    from metarl.sampling.workers import WorkerPool

T = TypeVar("T")


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


def action_layout(space: gym.Space[Any]) -> tuple[tuple[int, ...], type]:
    """Shape and dtype of one env's action as the sampler hands it over (Discrete: an int64 index)."""
    if isinstance(space, gym.spaces.Discrete):
        return (), np.int64
    return tuple(space.shape or ()), np.float32


@dataclass
class StepArrays:
    """What envs exchange with the sampler at each step, one row per env: the policy's actions in;
    observations, rewards, dones and successes out. In-process arrays, or views of shared memory."""

    actions: np.ndarray  # [n, *action_shape]
    observations: np.ndarray  # [n, obs_dim] float32
    rewards: np.ndarray  # [n] float32
    dones: np.ndarray  # [n] bool
    successes: np.ndarray  # [n] bool

    @staticmethod
    def layout(n: int, obs_dim: int, action_space: gym.Space[Any]) -> list[tuple[tuple[int, ...], type]]:
        """(shape, dtype) of each field, in order; the widest dtype (a Discrete action) comes first."""
        action_shape, action_dtype = action_layout(action_space)
        return [((n, *action_shape), action_dtype), ((n, obs_dim), np.float32), ((n,), np.float32)] + [
            ((n,), np.bool_)
        ] * 2

    @classmethod
    def nbytes(cls, n: int, obs_dim: int, action_space: gym.Space[Any]) -> int:
        return sum(
            int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in cls.layout(n, obs_dim, action_space)
        )

    @classmethod
    def allocate(cls, n: int, obs_dim: int, action_space: gym.Space[Any], buffer: Any = None) -> StepArrays:
        """Arrays for `n` envs, laid out in `buffer` (at least `nbytes` bytes, e.g. shared memory) or new."""
        data = bytearray(cls.nbytes(n, obs_dim, action_space)) if buffer is None else buffer
        arrays: list[np.ndarray] = []
        offset = 0
        for shape, dtype in cls.layout(n, obs_dim, action_space):
            count = int(np.prod(shape))
            arrays.append(np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape))
            offset += count * np.dtype(dtype).itemsize
        return cls(*arrays)

    def rows(self, start: int, stop: int) -> StepArrays:
        """The rows of envs `start`…`stop - 1`, as views."""
        return StepArrays(
            *(a[start:stop] for a in (self.actions, self.observations, self.rewards, self.dones, self.successes))
        )


class EnvSlice:
    """The `make_env` envs of a contiguous run of a meta-batch's episodes, stepped one after another.

    `env_tasks` holds the task of each env; env i is episode `first + i` of the meta-batch's flat
    list and resets with `seed + first + i`. Each call into a plugin's env is preceded by
    `watch(first + i)` and followed by `watch(-1)` (a worker process records which env it is in, so
    that a hang or a crash can be named), and any exception the
    env raises becomes a PluginError naming the family, its package and the task.
    """

    def __init__(
        self,
        family: TaskDistribution,
        env_tasks: list[dict[str, Any]],
        first: int = 0,
        watch: Callable[[int], None] | None = None,
    ) -> None:
        self.family, self.env_tasks, self.first = family, env_tasks, first
        self._watch = watch or (lambda index: None)
        self.envs: list[gym.Env] = []
        try:
            for i, task in enumerate(env_tasks):
                self.envs.append(self._call(i, "make_env", family.make_env, task))
        except BaseException:
            self.close()
            raise
        first_env = self.envs[0]
        self.observation_space, self.action_space = first_env.observation_space, first_env.action_space
        check_spaces(self.observation_space, self.action_space, f"env of {type(family).__name__}")
        self.obs_dim = observation_dim(self.observation_space)
        self.reports_success = False

    def reset(self, seed: int, arrays: StepArrays) -> None:
        """Start one episode in every env; their first observations go to `arrays.observations`."""
        arrays.dones[:] = False
        arrays.successes[:] = False
        for i, env in enumerate(self.envs):
            obs = self._call(i, "reset", env.reset, seed=seed + self.first + i)[0]
            arrays.observations[i] = self._observation(obs, i)

    def step(self, arrays: StepArrays) -> None:
        """Step every running env with its row of `arrays.actions`; an env that is done gets zeros."""
        actions = arrays.actions
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        if isinstance(self.action_space, gym.spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        for i, env in enumerate(self.envs):
            if arrays.dones[i]:
                arrays.observations[i], arrays.rewards[i] = 0.0, 0.0
                continue
            action = int(actions[i]) if discrete else actions[i]
            obs, reward, terminated, truncated, info = self._call(i, "step", env.step, action)
            arrays.observations[i] = self._observation(obs, i)
            if (shape := np.shape(np.asarray(reward))) != ():
                raise self.broken(i, f"returned a reward of shape {shape}, not a number")
            arrays.rewards[i] = reward
            arrays.dones[i] = terminated or truncated
            if "success" in info:
                self.reports_success = True
                arrays.successes[i] |= bool(info["success"])

    def close(self) -> None:
        for i, env in enumerate(self.envs):
            self._call(i, "close", env.close)
        self.envs = []

    def _call(self, index: int, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)` into env `index`'s plugin code, watched, its exceptions named."""
        self._watch(self.first + index)
        try:
            return call(*args, **kwargs)
        except MetarlError:
            raise
        except Exception as exc:
            raise self.broken(index, f"raised {type(exc).__name__} in {what}: {first_line(exc)}") from exc
        finally:
            self._watch(-1)

    def _observation(self, obs: Any, index: int) -> np.ndarray:
        """Env `index`'s observation as a float vector; one that does not fit the space names the env."""
        try:
            row = _to_float(self.observation_space, obs)
        except (TypeError, ValueError, IndexError) as exc:
            raise self.broken(
                index, f"returned an observation metarl cannot read ({type(exc).__name__}: {exc})"
            ) from None
        if row.size != self.obs_dim:
            raise self.broken(
                index, f"returned an observation of {row.size} values, but its observation space has {self.obs_dim}"
            )
        return row

    def broken(self, index: int, what: str) -> PluginError:
        """An error naming env `index`'s family, its package and its task."""
        return env_error(self.family, self.env_tasks[index], self.first + index, what)


def env_error(family: TaskDistribution, task: dict[str, Any], env: int, what: str) -> PluginError:
    """`env of family F (package P) for task {...} (env k) <what>`, k its place in the meta-batch."""
    package = registry.distribution_of(family)
    return PluginError(
        f"env of family {type(family).__name__} (package {package}) for task {short_repr(task)} (env {env}) {what}"
    )


class GymVectorTaskEnv(VectorTaskEnv):
    """The generic path in this process: one `make_env` instance per (task, episode), stepped in a
    Python loop (`metarl.sampling.workers` steps the same envs in worker processes)."""

    def __init__(
        self,
        family: TaskDistribution,
        tasks: list[dict[str, Any]],
        episodes_per_task: int,
        device: torch.device,
    ) -> None:
        self.num_tasks, self.episodes_per_task, self.device = len(tasks), episodes_per_task, device
        self.family, self.tasks = family, tasks
        self.slice = EnvSlice(family, [task for task in tasks for _ in range(episodes_per_task)])
        self.envs = self.slice.envs
        self.observation_space, self.action_space = self.slice.observation_space, self.slice.action_space
        self._arrays = StepArrays.allocate(len(self.envs), self.slice.obs_dim, self.action_space)

    def reset(self, seed: int) -> torch.Tensor:
        self.slice.reset(seed, self._arrays)
        shape = (self.num_tasks, self.episodes_per_task, self.slice.obs_dim)
        return to_device(self._arrays.observations.copy().reshape(shape), self.device)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        arrays = self._arrays
        arrays.actions[:] = actions.detach().cpu().numpy().reshape(arrays.actions.shape)
        self.slice.step(arrays)
        shape = (self.num_tasks, self.episodes_per_task)
        return step_to_device(arrays.observations, arrays.rewards, arrays.dones, shape, self.device)

    def episode_successes(self) -> torch.Tensor | None:
        if not self.slice.reports_success:
            return None
        successes = self._arrays.successes.reshape(self.num_tasks, self.episodes_per_task)
        return torch.from_numpy(successes.astype(np.float32)).to(self.device)

    def close(self) -> None:
        self.slice.close()


def make_vector_env(
    family: TaskDistribution,
    tasks: list[dict[str, Any]],
    episodes_per_task: int,
    device: torch.device,
    workers: WorkerPool | None = None,
) -> VectorTaskEnv:
    """The family's batched fast path when it has one, else the generic `make_env` path: in the
    `workers` pool's processes when one is given, in this process otherwise."""
    env = family.make_vector_env(tasks, episodes_per_task, device)
    if env is not None:
        return env
    if workers is not None:
        return workers.vector_env(family, tasks, episodes_per_task, device)
    return GymVectorTaskEnv(family, tasks, episodes_per_task, device)
