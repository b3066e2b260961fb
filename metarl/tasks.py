"""The task-family contract: sample task parameters, build a Gymnasium env for one task, optionally
step many tasks at once (`VectorTaskEnv`), in Box or Discrete spaces."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from metarl.errors import PluginError

if TYPE_CHECKING:
    import torch


class TaskDistribution:
    """A named family of tasks (the `metarl.envs` entry-point group).

    Subclasses take keyword arguments from the config (none required) and implement `sample_tasks`
    and `make_env`. They may override `make_vector_env` with a faster path that steps many tasks at
    once; the per-task `make_env` path must always work.
    """

    #: default episode length, used when the config does not set `horizon`
    max_episode_steps: int = 100
    #: YAML file of reference hyperparameters: a path relative to the package of the subclass's module,
    #: or "package:path" for a file in another package
    config_file: str | None = None

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """`num_tasks` JSON-serialisable task parameter dicts drawn with `rng`."""
        raise NotImplementedError

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        """A Gymnasium env (Box or Discrete spaces) for one task."""
        raise NotImplementedError

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> VectorTaskEnv | None:
        """Optional batched fast path for all tasks at once; None means use `make_env` per episode."""
        return None

    def video_env(self, task: dict[str, Any], size: int) -> gym.Env | None:
        """Optional: an env of `task` whose `render()` returns `size`×`size` RGB frames, for
        `metarl evaluate --video`; None (the default) means the family cannot be rendered."""
        return None

    @classmethod
    def reference_config(cls) -> dict[str, Any]:
        """The family's shipped hyperparameters (empty when it ships none)."""
        if cls.config_file is None:
            return {}
        import yaml

        package, _, path = cls.config_file.rpartition(":")
        package = package or cls.__module__.rpartition(".")[0] or cls.__module__
        text = resources.files(package).joinpath(path).read_text()
        return yaml.safe_load(text) or {}


def observation_dim(space: gym.Space[Any]) -> int:
    """Flat size of an observation as the sampler delivers it (Discrete is one-hot)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"unsupported observation space {space!r}: metarl supports Box and Discrete")


class VectorTaskEnv:
    """Steps episodes of many tasks at once; tensors are shaped [num_tasks, episodes_per_task, ...].

    Each env runs one episode per `reset`. `step` returns (observations, rewards, dones); an episode
    that is done is ignored by the sampler afterwards, whatever the env returns for it.
    """

    observation_space: gym.Space[Any]
    action_space: gym.Space[Any]
    num_tasks: int
    episodes_per_task: int
    device: torch.device

    def reset(self, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def episode_successes(self) -> torch.Tensor | None:
        """[num_tasks, episodes_per_task]: whether each episode since `reset` reported success
        (`info["success"]`, as Meta-World does), or None when the env reports no success."""
        return None

    def close(self) -> None:
        """Release resources (nothing by default)."""


def check_spaces(observation_space: gym.Space[Any], action_space: gym.Space[Any], where: str) -> None:
    """Raise a PluginError unless both spaces are Box or Discrete."""
    for role, space in (("observation", observation_space), ("action", action_space)):
        if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise PluginError(f"{where}: unsupported {role} space {space!r}; metarl supports Box and Discrete")


def space_signature(space: gym.Space[Any]) -> tuple[str, int | tuple[int, ...] | None]:
    """What a policy depends on in a Box or Discrete space: its kind and shape (Box bounds may differ)."""
    return (type(space).__name__, int(space.n)) if isinstance(space, gym.spaces.Discrete) else ("Box", space.shape)
