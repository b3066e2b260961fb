"""The shared base of the MuJoCo task envs and families: a v5 env whose reward is the task's.

A task env is a mixin placed before a Gymnasium v5 MuJoCo env class. It keeps the v5 model,
observation, reset noise and healthy-termination, and replaces the reward with

    reward = task_reward(qpos before, qpos after) + healthy · healthy_reward − control_cost(action)

where `healthy_reward` and `control_cost` are the v5 env's own (half-cheetah has no healthy bonus).
The v5 contact cost is dropped (it needs `cfrc_ext`, which is not part of the simulator state),
except in an env class that sets `contact_cost_in_reward`; the batched path recomputes the ant's
contact forces from the state before an env step's last substep.

The constraint solver starts cold at every env step (`qacc_warmstart` zeroed), as `mujoco.rollout`
does from a state vector; the batched path (`metarl_envs.mujoco.vector`) then reproduces this env
bit for bit. The solver converges to the same accelerations within its tolerance either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import mujoco
import numpy as np
import torch
from gymnasium import spaces, utils

from metarl.tasks import TaskDistribution

if TYPE_CHECKING:
    from metarl_envs.mujoco.vector import MujocoVectorEnv


class TaskMujocoEnv:
    """Mixin for one task of a family; the task is the keyword `task` (Gymnasium ID `metarl/...-v0`)."""

    #: the task used when none is given
    default_task: ClassVar[dict[str, Any]] = {}
    #: v5 constructor arguments that differ from the v5 defaults
    default_kwargs: ClassVar[dict[str, Any]] = {}
    #: whether the reward also has the v5 contact cost (it reads `cfrc_ext`)
    contact_cost_in_reward: ClassVar[bool] = False
    #: whether the healthy bonus is paid on every step, the one that ends the episode included
    bonus_on_every_step: ClassVar[bool] = False

    def __init__(self, task: dict[str, Any] | None = None, action_scale: float = 1.0, **kwargs: Any) -> None:
        self.task = dict(self.default_task if task is None else task)
        with _without_deprecation_warnings():
            super().__init__(**{**self.default_kwargs, **kwargs})
        utils.EzPickle.__init__(self, task=task, action_scale=action_scale, **kwargs)  # as the v5 class does
        #: the actuators' control range; the policy acts in `action_space`, that range times `action_scale`
        self.control_space = self.action_space
        self.action_scale = check_action_scale(action_scale)
        low, high = self.control_space.low, self.control_space.high
        self.action_space = spaces.Box(low * self.action_scale, high * self.action_scale, dtype=low.dtype)

    def to_control(self, actions: np.ndarray) -> np.ndarray:
        """Policy actions (rows or one) as actuator controls: divided by `action_scale`, clipped to range."""
        return np.clip(np.asarray(actions) / self.action_scale, self.control_space.low, self.control_space.high)

    def set_task(self, task: dict[str, Any]) -> None:
        """Switch this env to another task of its family (reusing the compiled model)."""
        self.task = dict(task)

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        """The task's reward term for a batch of transitions of this task, rows of qpos [N, nq]."""
        raise NotImplementedError

    def velocity(self, qpos_before: np.ndarray, qpos_after: np.ndarray, dims: int = 1) -> np.ndarray:
        """Velocity of the root's first `dims` position coordinates over one env step, [N, dims]."""
        return (qpos_after[:, :dims] - qpos_before[:, :dims]) / self.dt

    def do_simulation(self, ctrl: np.ndarray, n_frames: int) -> None:
        if self.contact_forces_read and n_frames > 1:
            # cold again for the last substep, after which cfrc_ext is read: the batched path runs
            # that substep alone from the state vector before it
            self.data.qacc_warmstart[:] = 0
            super().do_simulation(ctrl, n_frames - 1)
            n_frames = 1
        self.data.qacc_warmstart[:] = 0  # see the module docstring
        super().do_simulation(ctrl, n_frames)

    @property
    def contact_forces_read(self) -> bool:
        """Whether the observation or the reward reads `cfrc_ext`."""
        return self.contact_cost_in_reward or bool(getattr(self, "_include_cfrc_ext_in_observation", False))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = self.to_control(action)
        qpos_before = self.data.qpos.copy()
        self.do_simulation(action, self.frame_skip)
        healthy = bool(getattr(self, "is_healthy", True))
        reward = (
            self.task_reward(qpos_before[None], self.data.qpos[None])[0]
            + (healthy or self.bonus_on_every_step) * getattr(self, "_healthy_reward", 0.0)
            - self.control_cost(action)
            - (self.contact_cost if self.contact_cost_in_reward else 0.0)
        )
        terminated = not healthy and getattr(self, "_terminate_when_unhealthy", False)
        return self._get_obs(), float(reward), terminated, False, {"x_position": float(self.data.qpos[0])}


def check_action_scale(value: Any) -> float:
    """`action_scale` as a float; a ValueError unless it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"action_scale must be a positive number, got {value!r}")
    return float(value)


@contextmanager
def _without_deprecation_warnings() -> Iterator[None]:
    """Silence MuJoCo's compiler deprecation notices about Gymnasium's XML (e.g. `settotalmass`)."""
    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if "deprecated" in message:
            return
        if previous is not None:
            previous(message)
        else:
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class MujocoFamily(TaskDistribution):
    """A family of `env_class` tasks; `make_vector_env` steps them all through `mujoco.rollout`.

    The envs of the fast path are kept and switched to new tasks with `set_task`, so a meta-batch does
    not compile its models again at every iteration.
    """

    env_class: ClassVar[type[TaskMujocoEnv]]
    max_episode_steps = 200

    def __init__(self, **env_kwargs: Any) -> None:
        if "action_scale" in env_kwargs:
            check_action_scale(env_kwargs["action_scale"])
        self.env_kwargs = env_kwargs
        self._pool: list[TaskMujocoEnv] = []

    def make_env(self, task: dict[str, Any]) -> TaskMujocoEnv:
        return self.env_class(task=task, **self.env_kwargs)

    def video_env(self, task: dict[str, Any], size: int) -> TaskMujocoEnv:
        os.environ.setdefault("MUJOCO_GL", "egl")  # read when the first renderer is created
        return self.env_class(task=task, render_mode="rgb_array", width=size, height=size, **self.env_kwargs)

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> MujocoVectorEnv | None:
        from metarl_envs.mujoco.vector import MujocoVectorEnv, supports_batched_stepping

        while len(self._pool) < len(tasks):
            self._pool.append(self.make_env(tasks[len(self._pool)]))
        envs = self._pool[: len(tasks)]
        if not supports_batched_stepping(envs[0]):
            return None
        for env, task in zip(envs, tasks):
            env.set_task(task)
        return MujocoVectorEnv(envs, episodes_per_task, device)
