"""All episodes of a meta-batch of MuJoCo tasks stepped at once from state vectors.

The simulator state of every episode is one row of an array; a step hands the rows of the running
episodes to `mujoco.rollout` (one C call, all cores, one `MjModel` per task, one scratch `MjData` per
thread), then computes observations, rewards and terminations for all rows with numpy. Reset noise
comes from the task's own env, `env.reset(seed=seed + i)` for episode i of the flat T×E list, as in
`GymVectorTaskEnv`, so both paths see the same episodes. One difference remains: after a MuJoCo
warning (a diverging simulation) `mujoco.rollout` freezes that episode's state, where `mj_step` would
reset it to the initial pose.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from mujoco import rollout

from metarl import distributed
from metarl.sampling.vector_env import step_to_device, to_device
from metarl.tasks import VectorTaskEnv
from metarl_envs.mujoco.base import TaskMujocoEnv

FULLPHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
# (models, states [n, nstate], controls [n, nu]) -> states after the stepper's number of substeps
Stepper = Callable[[list[mujoco.MjModel], np.ndarray, np.ndarray], np.ndarray]


def reads_contact_forces(env: TaskMujocoEnv) -> bool:
    """Whether the env's observation or reward reads the contact forces `cfrc_ext` (an ant's)."""
    return isinstance(env, AntEnv) and env.contact_forces_read


def supports_batched_stepping(env: TaskMujocoEnv) -> bool:
    """Whether the env's observation, reward and health check read nothing but qpos, qvel and, for
    an ant, the contact forces that `MujocoVectorEnv` recomputes."""
    skipped = env.observation_structure["skipped_qpos"]
    width = env.model.nq - skipped + env.model.nv
    if isinstance(env, AntEnv) and env._include_cfrc_ext_in_observation:
        width += 6 * (env.model.nbody - 1)
    contact_ok = not env.contact_cost_in_reward or isinstance(env, AntEnv)
    batched = isinstance(env, (HalfCheetahEnv, AntEnv, HopperEnv, Walker2dEnv))
    return env.observation_space.shape == (width,) and contact_ok and batched


def observations(
    env: TaskMujocoEnv, qpos: np.ndarray, qvel: np.ndarray, contact_forces: np.ndarray | None = None
) -> np.ndarray:
    """The v5 `_get_obs` of each row; `contact_forces` [N, nbody, 6] are the clipped `cfrc_ext`."""
    velocity = np.clip(qvel, -10, 10) if isinstance(env, (HopperEnv, Walker2dEnv)) else qvel
    parts = [qpos[:, env.observation_structure["skipped_qpos"] :], velocity]
    if isinstance(env, AntEnv) and env._include_cfrc_ext_in_observation:
        assert contact_forces is not None, "this ant observes contact forces"
        parts.append(contact_forces[:, 1:].reshape(len(qpos), -1))  # v5 leaves out the world body's
    return np.concatenate(parts, axis=1)


def healthy(env: TaskMujocoEnv, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """The v5 `is_healthy` of each row (the ranges are the v5 env's constructor arguments)."""
    if isinstance(env, HalfCheetahEnv):
        return np.ones(len(qpos), dtype=bool)
    z_low, z_high = env._healthy_z_range
    if isinstance(env, AntEnv):
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        return finite & (z_low <= qpos[:, 2]) & (qpos[:, 2] <= z_high)
    angle_low, angle_high = env._healthy_angle_range
    ok = (z_low < qpos[:, 1]) & (qpos[:, 1] < z_high) & (angle_low < qpos[:, 2]) & (qpos[:, 2] < angle_high)
    if isinstance(env, HopperEnv):
        state = np.concatenate([qpos, qvel], axis=1)[:, 2:]
        state_low, state_high = env._healthy_state_range
        ok &= ((state_low < state) & (state < state_high)).all(axis=1)
    return ok


def make_stepper(model: mujoco.MjModel, frame_skip: int, nthread: int) -> Stepper:
    """`mujoco.rollout` on a thread pool, or the same steps in Python where it has no `Rollout`."""
    nstate = mujoco.mj_stateSize(model, FULLPHYSICS)
    if hasattr(rollout, "Rollout"):  # mujoco >= 3.3
        pool = rollout.Rollout(nthread=nthread if nthread > 1 else 0)
        datas = [mujoco.MjData(model) for _ in range(max(nthread, 1))]

        def step(models: list[mujoco.MjModel], states: np.ndarray, controls: np.ndarray) -> np.ndarray:
            out = np.empty((len(states), frame_skip, nstate))
            control = np.ascontiguousarray(np.repeat(controls[:, None], frame_skip, axis=1))
            pool.rollout(models, datas, states, control, nstep=frame_skip, skip_checks=True, state=out)
            return out[:, -1]

        return step

    data = mujoco.MjData(model)

    def step_in_python(models: list[mujoco.MjModel], states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        out = np.empty_like(states)
        for i, m in enumerate(models):
            mujoco.mj_setState(m, data, states[i], FULLPHYSICS)
            data.qacc_warmstart[:] = 0
            data.ctrl[:] = controls[i]
            mujoco.mj_step(m, data, nstep=frame_skip)
            mujoco.mj_getState(m, data, out[i], FULLPHYSICS)
        return out

    return step_in_python


class MujocoVectorEnv(VectorTaskEnv):
    """`episodes_per_task` episodes of each task's env, stepped from state vectors (module docstring)."""

    def __init__(
        self,
        envs: list[TaskMujocoEnv],
        episodes_per_task: int,
        device: torch.device,
        stepper: Stepper | None = None,
    ) -> None:
        self.envs = envs  # one per task: its model, reset noise and reward (owned by the family, not closed here)
        self.num_tasks, self.episodes_per_task, self.device = len(envs), episodes_per_task, device
        first = envs[0]
        self.observation_space, self.action_space = first.observation_space, first.action_space
        model = first.model
        self._models = [env.model for env in envs for _ in range(episodes_per_task)]
        self._state = np.zeros((len(self._models), mujoco.mj_stateSize(model, FULLPHYSICS)))
        start = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME.value)
        self._qpos = slice(start, start + model.nq)
        self._qvel = slice(start + model.nq, start + model.nq + model.nv)
        self._done = np.zeros(len(self._models), dtype=bool)
        cores = distributed.local_cores()
        # With contact forces the last substep of each env step runs here, row by row, as the env
        # runs it (`TaskMujocoEnv.do_simulation`): cfrc_ext is what mj_rnePostConstraint leaves after it.
        self._contact = reads_contact_forces(first)
        substeps = first.frame_skip - 1 if self._contact else first.frame_skip
        self._step = stepper or (make_stepper(model, substeps, cores) if substeps else None)
        self._contact_forces = np.zeros((len(self._models), model.nbody, 6))
        # That substep runs on `cores` Python threads (MuJoCo's calls release the GIL), each with its
        # own scratch MjData and a contiguous share of the rows.
        self._scratch = [mujoco.MjData(model) for _ in range(cores)] if self._contact else []
        self._row_threads = ThreadPoolExecutor(cores) if self._contact and cores > 1 else None
        # The v5 env's reward and termination settings, shared by all tasks of a family.
        self._healthy_reward = getattr(first, "_healthy_reward", 0.0)
        self._terminates = getattr(first, "_terminate_when_unhealthy", False)
        self._ctrl_cost_weight = first._ctrl_cost_weight

    def _observations(self) -> np.ndarray:
        qpos, qvel = self._state[:, self._qpos], self._state[:, self._qvel]
        return observations(self.envs[0], qpos, qvel, self._clipped_contact_forces() if self._contact else None)

    def _clipped_contact_forces(self) -> np.ndarray:
        low, high = getattr(self.envs[0], "_contact_force_range", (-np.inf, np.inf))
        return np.clip(self._contact_forces, low, high)

    def _advance(self, running: np.ndarray, controls: np.ndarray) -> None:
        """One env step of the `running` rows; with contact forces, those of its last substep."""
        models, states = [self._models[i] for i in running], self._state[running]
        stepped = states if self._step is None else self._step(models, states, controls)
        if not self._contact:
            self._state[running] = stepped
            return
        shares = np.array_split(np.arange(len(running)), len(self._scratch))
        substep = partial(self._last_substep, running, models, stepped, controls)
        run = map if self._row_threads is None else self._row_threads.map
        list(run(substep, shares, self._scratch))  # list: wait for every share, raise what one raised

    def _last_substep(
        self,
        running: np.ndarray,
        models: list[mujoco.MjModel],
        stepped: np.ndarray,
        controls: np.ndarray,
        share: np.ndarray,
        data: mujoco.MjData,
    ) -> None:
        """The contact-reading last substep of the `share` positions of `running`, on `data`."""
        for k in share:
            row, model = running[k], models[k]
            mujoco.mj_setState(model, data, stepped[k], FULLPHYSICS)
            data.qacc_warmstart[:] = 0
            data.ctrl[:] = controls[k]
            mujoco.mj_step(model, data)
            mujoco.mj_rnePostConstraint(model, data)
            mujoco.mj_getState(model, data, self._state[row], FULLPHYSICS)
            self._contact_forces[row] = data.cfrc_ext

    def reset(self, seed: int) -> torch.Tensor:
        self._done[:] = False
        self._contact_forces[:] = 0  # mj_resetData's, which a reset's forward pass leaves
        for i in range(len(self._state)):
            env = self.envs[i // self.episodes_per_task]
            env.reset(seed=seed + i)
            mujoco.mj_getState(env.model, env.data, self._state[i], FULLPHYSICS)
        obs = self._observations().astype(np.float32)
        return to_device(obs.reshape(self.num_tasks, self.episodes_per_task, -1), self.device)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        action = self.envs[0].to_control(actions.detach().cpu().numpy().reshape(len(self._state), -1))
        running = np.flatnonzero(~self._done)
        qpos_before = self._state[:, self._qpos].copy()
        self._advance(running, action[running].astype(np.float64))
        qpos, qvel = self._state[:, self._qpos], self._state[:, self._qvel]
        is_healthy = healthy(self.envs[0], qpos, qvel)
        shape = (self.num_tasks, self.episodes_per_task, -1)
        reward = np.concatenate(
            [env.task_reward(*rows) for env, *rows in zip(self.envs, qpos_before.reshape(shape), qpos.reshape(shape))]
        )
        first = self.envs[0]
        bonus = (is_healthy | first.bonus_on_every_step) * self._healthy_reward
        reward = reward + bonus - self._ctrl_cost_weight * np.square(action).sum(axis=1)
        if first.contact_cost_in_reward:
            reward = reward - first._contact_cost_weight * np.square(self._clipped_contact_forces()).sum(axis=(1, 2))
        self._done |= ~is_healthy & self._terminates
        shape = (self.num_tasks, self.episodes_per_task)
        return step_to_device(self._observations(), reward, self._done, shape, self.device)

    def close(self) -> None:
        if self._row_threads is not None:
            self._row_threads.shutdown()
