"""1-D point-mass reaching: push a point with mass and friction to an unseen target position.

Task: `{"target": x*}`, x* uniform in [−1, 1]. Observation: (position, velocity). Action: a force,
clipped to [−1, 1]. Dynamics, with time step dt: v ← v + dt·(a − friction·v)/mass, then x ← x + dt·v;
the speed is limited to 2 and the track ends in walls at ±2 that stop the point. The point starts at
rest near the origin. Reward: −|x − x*| − 0.01·a² after the move. The episode never terminates and is
truncated after 50 steps.

The family only implements `sample_tasks` and `make_env`, so metarl steps it on its generic path.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl.tasks import TaskDistribution

TARGET_LOW, TARGET_HIGH = -1.0, 1.0
MAX_FORCE = 1.0
START_NOISE = 0.05
MAX_SPEED = 2.0
TRACK_END = 2.0
ACTION_COST = 0.01
HORIZON = 50


class PointReachEnv(gym.Env):
    """One point-reach task as a Gymnasium env."""

    metadata = {"render_modes": []}

    def __init__(
        self, task: dict[str, Any] | None = None, mass: float = 1.0, friction: float = 0.5, dt: float = 0.1
    ) -> None:
        bound = np.array([TRACK_END, MAX_SPEED], dtype=np.float32)
        self.observation_space = gym.spaces.Box(-bound, bound, dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_FORCE, MAX_FORCE, shape=(1,), dtype=np.float32)
        self.target = float((task or {"target": 0.0})["target"])
        self.mass, self.friction, self.dt = mass, friction, dt
        self._state = np.zeros(2, dtype=np.float64)
        self._steps = 0

    def _obs(self) -> np.ndarray:
        return self._state.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._state = np.array([self.np_random.uniform(-START_NOISE, START_NOISE), 0.0])
        self._steps = 0
        return self._obs(), {"target": self.target}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        force = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -MAX_FORCE, MAX_FORCE))
        position, velocity = self._state
        velocity = np.clip(velocity + self.dt * (force - self.friction * velocity) / self.mass, -MAX_SPEED, MAX_SPEED)
        position += self.dt * velocity
        if abs(position) >= TRACK_END:
            position, velocity = np.sign(position) * TRACK_END, 0.0
        self._state = np.array([position, velocity])
        self._steps += 1
        reward = -abs(position - self.target) - ACTION_COST * force**2
        return self._obs(), float(reward), False, self._steps >= HORIZON, {"target": self.target}


class PointReach(TaskDistribution):
    """Targets uniform in [−1, 1]; `mass`, `friction` and `dt` are the same for every task."""

    max_episode_steps = HORIZON
    config_file = "configs/point-reach.yaml"

    def __init__(self, mass: float = 1.0, friction: float = 0.5, dt: float = 0.1) -> None:
        if mass <= 0 or friction < 0 or dt <= 0:
            raise ValueError(f"point-reach needs mass > 0, friction >= 0, dt > 0; got {mass=}, {friction=}, {dt=}")
        self.mass, self.friction, self.dt = mass, friction, dt

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"target": float(x)} for x in rng.uniform(TARGET_LOW, TARGET_HIGH, size=num_tasks)]

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        return PointReachEnv(task, self.mass, self.friction, self.dt)
