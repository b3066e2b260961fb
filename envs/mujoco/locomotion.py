"""Locomotion towards a goal (Finn et al. 2017; Rothfuss et al. 2019) on Gymnasium's v5 MuJoCo envs.

Velocities are finite differences of the root's `qpos` over one env step (`dt`); for the ant and the
humanoid this is the torso's free joint. Every reward also has the v5 env's control cost and, for the
ant and the humanoid, its healthy bonus; see `metarl_envs.mujoco.base`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from metarl_envs.mujoco.base import MujocoFamily, TaskMujocoEnv

# The MAML/ProMP cheetah control cost, 0.5 · 0.1 ‖a‖² (v5's default weight is 0.1).
CHEETAH = {"ctrl_cost_weight": 0.05}
# Contact forces are not part of the simulator state; without them the observation is qpos[2:], qvel.
ANT = {"include_cfrc_ext_in_observation": False}
# ProMP's AntRandDirec: the clipped contact forces in the observation (and a contact cost of 0.5e-3,
# v5's default weight), the episode ending only when the torso leaves 0 ≤ z ≤ 1.
ANT_PROMP = {"include_cfrc_ext_in_observation": True, "healthy_z_range": (0.0, 1.0)}


def _signs(num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [{"direction": int(d)} for d in 2 * rng.integers(0, 2, size=num_tasks) - 1]


class HalfCheetahVelEnv(TaskMujocoEnv, HalfCheetahEnv):
    """`metarl/HalfCheetahVel-v0`; see `HalfCheetahVel`."""

    default_task = {"velocity": 1.0}
    default_kwargs = CHEETAH

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return -np.abs(self.velocity(qpos_before, qpos_after)[:, 0] - self.task["velocity"])


class HalfCheetahDirEnv(TaskMujocoEnv, HalfCheetahEnv):
    """`metarl/HalfCheetahDir-v0`; see `HalfCheetahDir`."""

    default_task = {"direction": 1}
    default_kwargs = CHEETAH

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return self.task["direction"] * self.velocity(qpos_before, qpos_after)[:, 0]


class AntVelEnv(TaskMujocoEnv, AntEnv):
    """`metarl/AntVel-v0`; see `AntVel`."""

    default_task = {"velocity": 1.0}
    default_kwargs = ANT

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return -np.abs(self.velocity(qpos_before, qpos_after)[:, 0] - self.task["velocity"])


class AntDirEnv(TaskMujocoEnv, AntEnv):
    """`metarl/AntDir-v0`; see `AntDir`."""

    default_task = {"direction": 1}
    default_kwargs = ANT

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return self.task["direction"] * self.velocity(qpos_before, qpos_after)[:, 0]


class AntGoalEnv(TaskMujocoEnv, AntEnv):
    """`metarl/AntGoal-v0`; see `AntGoal`."""

    default_task = {"goal": [0.0, 0.0]}
    default_kwargs = ANT

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return -np.abs(qpos_after[:, :2] - np.asarray(self.task["goal"])).sum(axis=1)


class HumanoidDirEnv(TaskMujocoEnv, HumanoidEnv):
    """`metarl/HumanoidDir-v0`; see `HumanoidDir`."""

    default_task = {"angle": 0.0}

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        angle = self.task["angle"]
        return self.velocity(qpos_before, qpos_after, dims=2) @ np.array([np.cos(angle), np.sin(angle)])


class HalfCheetahVel(MujocoFamily):
    """Half-cheetah running at a target velocity v_goal ~ U[0, 2] (task `{"velocity": v_goal}`).

    Reward −|v_x − v_goal| − 0.05·‖a‖² (MAML, ProMP). Never terminates.
    """

    env_class = HalfCheetahVelEnv
    config_file = "metarl_envs:configs/halfcheetah-vel.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 2.0, size=num_tasks)]


class HalfCheetahDir(MujocoFamily):
    """Half-cheetah running forward or backward, d = ±1 with equal odds (task `{"direction": d}`).

    Reward d·v_x − 0.05·‖a‖² (MAML, ProMP). Never terminates.
    """

    env_class = HalfCheetahDirEnv
    config_file = "metarl_envs:configs/halfcheetah-dir.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return _signs(num_tasks, rng)


class AntDirProMPEnv(TaskMujocoEnv, AntEnv):
    """`metarl/AntDirProMP-v0`; see `AntDirProMP`."""

    default_task = {"direction": 1}
    default_kwargs = ANT_PROMP
    contact_cost_in_reward = True
    bonus_on_every_step = True

    def task_reward(self, qpos_before: np.ndarray, qpos_after: np.ndarray) -> np.ndarray:
        return self.task["direction"] * self.velocity(qpos_before, qpos_after)[:, 0]


class AntVel(MujocoFamily):
    """Ant running along x at a target velocity v_goal ~ U[0, 3] (task `{"velocity": v_goal}`).

    Reward −|v_x − v_goal| + 1·healthy − 0.5·‖a‖² (the v5 healthy bonus and control cost, equal to
    ProMP's ant; MAML's rllab ant used 0.05 and 0.005·‖a‖²). Observation qpos[2:], qvel (27 values:
    v5 without contact forces, which were all zero under the mujoco-py 2 of pytorch-maml-rl's runs;
    ProMP's mujoco-py 1.50 had them, see `AntDirProMP`).
    Terminates when unhealthy (v5: torso z outside [0.2, 1] or a non-finite state).
    """

    env_class = AntVelEnv
    config_file = "metarl_envs:configs/ant-vel.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 3.0, size=num_tasks)]


class AntDir(MujocoFamily):
    """Ant running forward or backward along x, d = ±1 with equal odds (task `{"direction": d}`).

    Reward d·v_x + 1·healthy − 0.5·‖a‖²; observation and termination as `AntVel`.
    """

    env_class = AntDirEnv
    config_file = "metarl_envs:configs/ant-dir.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return _signs(num_tasks, rng)


class AntDirProMP(MujocoFamily):
    """ProMP's AntRandDirec (Rothfuss et al. 2019, its `ant_rand_direc.py`): the ant running forward or
    backward along x, d = ±1 with equal odds (task `{"direction": d}`).

    Reward d·v_x + 1 − 0.5·‖a‖² − 0.5e-3·‖clip(cfrc_ext, −1, 1)‖², the survive bonus on every step;
    observation qpos[2:], qvel and the clipped contact forces of the 13 bodies (105 values: ProMP's 111
    also hold the world body's, always zero); the episode ends when the torso leaves 0 ≤ z ≤ 1 or the
    state is not finite. Contact forces are not simulator state: the batched path recomputes them
    from the state before each env step's last substep.
    """

    env_class = AntDirProMPEnv
    config_file = "metarl_envs:configs/ant-dir-promp.yaml"
    max_episode_steps = 100

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return _signs(num_tasks, rng)


class AntGoal(MujocoFamily):
    """Ant walking to a goal g uniform in the disc of radius 3 (task `{"goal": [x, y]}`).

    Reward −‖xy − g‖₁ + 1·healthy − 0.5·‖a‖², xy the torso position after the step (ProMP's L1
    distance; its 0.1·‖a‖² and zero survive bonus are replaced by the v5 values shared by all ant
    families). Observation and termination as `AntVel`.
    """

    env_class = AntGoalEnv
    config_file = "metarl_envs:configs/ant-goal.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        angle = rng.uniform(0.0, 2 * np.pi, size=num_tasks)
        radius = 3.0 * np.sqrt(rng.uniform(0.0, 1.0, size=num_tasks))  # uniform over the disc's area
        return [{"goal": [float(r * np.cos(a)), float(r * np.sin(a))]} for r, a in zip(radius, angle)]


class HumanoidDir(MujocoFamily):
    """Humanoid walking in the direction u = (cos θ, sin θ), θ ~ U[0, 2π) (task `{"angle": θ}`).

    Reward u·v_xy + 5·healthy − 0.1·‖ctrl‖² (v_xy of the torso; the v5 healthy bonus and control cost,
    as ProMP's humanoid without its 1.25 velocity weight and contact cost). Observation as v5 (348
    values, with contact and actuator forces, so it uses the generic `make_env` sampling path).
    Terminates when the torso z leaves [1, 2] (v5).
    """

    env_class = HumanoidDirEnv
    config_file = "metarl_envs:configs/humanoid-dir.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"angle": float(a)} for a in rng.uniform(0.0, 2 * np.pi, size=num_tasks)]
