"""The shared base of the MuJoCo task envs and families: a v5 env whose reward is the task's.

A task env is a mixin placed before a Gymnasium v5 MuJoCo env class. It keeps the v5 model,
observation, reset noise and healthy-termination, and replaces the reward with

    reward = task_reward(qpos before, qpos after) + healthy · healthy_reward − control_cost(action)

where `healthy_reward` and `control_cost` are the v5 env's own (half-cheetah has no healthy bonus).
The v5 contact cost is dropped: it needs `cfrc_ext`, which is not part of the simulator state.

The constraint solver starts cold at every env step (`qacc_warmstart` zeroed), as `mujoco.rollout`
does from a state vector; the batched path (`metarl_envs.mujoco.vector`) then reproduces this env
bit for bit. The solver converges to the same accelerations within its tolerance either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from gymnasium import utils

from metarl.tasks import TaskDistribution

if TYPE_CHECKING:
    from metarl_envs.mujoco.vector import MujocoVectorEnv


class TaskMujocoEnv:
    """Mixin for one task of a family; the task is the keyword `task` (Gymnasium ID `metarl/...-v0`)."""

    #: the task used when none is given
    default_task: ClassVar[dict[str, Any]] = {}
    #: v5 constructor arguments that differ from the v5 defaults
    default_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, task: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.task = dict(self.default_task if task is None else task)
        super().__init__(**{**self.default_kwargs, **kwargs})
        utils.EzPickle.__init__(self, task=task, **kwargs)  # the v5 class recorded its own arguments

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        """The task's reward term for a batch of transitions of this task, rows of qpos [N, nq]."""
        raise NotImplementedError

    def velocity(self, qpos_before: np.ndarray, qpos_after: np.ndarray, dims: int = 1) -> np.ndarray:
        """Velocity of the root's first `dims` position coordinates over one env step, [N, dims]."""
        return (qpos_after[:, :dims] - qpos_before[:, :dims]) / self.dt

    def do_simulation(self, ctrl: np.ndarray, n_frames: int) -> None:
        self.data.qacc_warmstart[:] = 0  # see the module docstring
        super().do_simulation(ctrl, n_frames)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        qpos_before = self.data.qpos.copy()
        self.do_simulation(action, self.frame_skip)
        healthy = bool(getattr(self, "is_healthy", True))
        reward = (
            self.task_reward(qpos_before[None], self.data.qpos[None])[0]
            + healthy * getattr(self, "_healthy_reward", 0.0)
            - self.control_cost(action)
        )
        terminated = not healthy and getattr(self, "_terminate_when_unhealthy", False)
        return self._get_obs(), float(reward), terminated, False, {"x_position": float(self.data.qpos[0])}


class MujocoFamily(TaskDistribution):
    """A family of `env_class` tasks; `make_vector_env` steps them all through `mujoco.rollout`."""

    env_class: ClassVar[type[TaskMujocoEnv]]
    max_episode_steps = 200

    def __init__(self, **env_kwargs: Any) -> None:
        self.env_kwargs = env_kwargs

    def make_env(self, task: dict[str, Any]) -> TaskMujocoEnv:
        return self.env_class(task=task, **self.env_kwargs)

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> MujocoVectorEnv | None:
        from metarl_envs.mujoco.vector import MujocoVectorEnv, supports_state_only_stepping

        envs = [self.make_env(task) for task in tasks]
        if not supports_state_only_stepping(envs[0]):
            return None
        return MujocoVectorEnv(envs, episodes_per_task, device)
