"""Random physical parameters (rand_param_envs, used by ProMP) on Gymnasium's v5 MuJoCo envs.

A task scales body masses, body inertias, joint damping and geom friction, one factor per entry:
base ** U(−log_scale_limit, log_scale_limit), base 1.5 (1.3 for damping, as rand_param_envs),
log_scale_limit 3. The reward and termination are the v5 env's own: forward velocity + healthy bonus
− control cost.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from metarl_envs.mujoco.base import MujocoFamily, TaskMujocoEnv

# MjModel field -> base of the exponential scale factor
SCALE_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}


class RandomParamsEnv(TaskMujocoEnv):
    """Mixin: the model's parameters scaled by the task's factors (an empty task keeps them)."""

    def __init__(self, task: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        self._nominal = {name: getattr(self.model, name).copy() for name in SCALE_BASES}
        self.set_task(self.task)

    def set_task(self, task: dict[str, Any]) -> None:
        super().set_task(task)
        for name, nominal in self._nominal.items():
            getattr(self.model, name)[:] = nominal * np.asarray(self.task.get(name, 1.0))
        # Recompute the constants derived from masses and inertias (e.g. the solver's inverse weights).
        mujoco.mj_setConst(self.model, self.data)

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return self._forward_reward_weight * self.velocity(qpos_before, qpos_after)[:, 0]


class HopperParamsEnv(RandomParamsEnv, HopperEnv):
    """`metarl/HopperParams-v0`; see `HopperParams`."""


class Walker2dParamsEnv(RandomParamsEnv, Walker2dEnv):
    """`metarl/Walker2dParams-v0`; see `Walker2dParams`."""


class RandomParamsFamily(MujocoFamily):
    """Tasks are scale factors for the parameters in `SCALE_BASES` (task: field name -> nested list)."""

    env_class: ClassVar[type[RandomParamsEnv]]

    def __init__(self, log_scale_limit: float = 3.0, **env_kwargs: Any) -> None:
        super().__init__(**env_kwargs)
        self.log_scale_limit = log_scale_limit
        model = self.env_class(**env_kwargs).model
        self._shapes = {name: getattr(model, name).shape for name in SCALE_BASES}

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        limit = self.log_scale_limit
        return [
            {
                name: (base ** rng.uniform(-limit, limit, size=self._shapes[name])).tolist()
                for name, base in SCALE_BASES.items()
            }
            for _ in range(num_tasks)
        ]


class HopperParams(RandomParamsFamily):
    """Hopper with random masses, inertias, damping and friction (see the module docstring).

    Reward (v5) v_x + 1·healthy − 0.001·‖a‖²; terminates when unhealthy (v5: z ≤ 0.7, |angle| ≥ 0.2
    or a state entry outside ±100).
    """

    env_class = HopperParamsEnv
    config_file = "metarl_envs:configs/hopper-params.yaml"


class Walker2dParams(RandomParamsFamily):
    """Walker2d with random masses, inertias, damping and friction (see the module docstring).

    Reward (v5) v_x + 1·healthy − 0.001·‖a‖²; terminates when unhealthy (v5: z outside (0.8, 2) or
    |angle| ≥ 1).
    """

    env_class = Walker2dParamsEnv
    config_file = "metarl_envs:configs/walker-params.yaml"
