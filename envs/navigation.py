"""2-D navigation (Finn et al. 2017): a point moves from the origin towards an unseen goal.

Task: `{"goal": [x, y]}`, goal uniform in [−0.5, 0.5]². Observation: the position (2,). Action: a
displacement, clipped to [−0.1, 0.1]². Reward: −‖position − goal‖₂ after the move. The episode
terminates when both coordinates are within 0.01 of the goal; horizon 100.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.tasks import TaskDistribution, VectorTaskEnv

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
MAX_ACTION = 0.1
SUCCESS_RADIUS = 0.01
RENDER_LIMIT = 1.0  # half-width of the rendered square: the goals' box and room around it


class Navigation2DEnv(gym.Env):
    """One navigation task as a Gymnasium env (`metarl/Navigation2D-v0`, task as keyword).

    With `render_mode="rgb_array"`, `render()` draws the path since the reset and the goal (a star)
    on a `render_size`-pixel square spanning [−1, 1]².
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self, task: dict[str, Any] | None = None, render_mode: str | None = None, render_size: int = 200
    ) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)
        self.goal = np.asarray((task or {"goal": [0.0, 0.0]})["goal"], dtype=np.float32)
        self.render_mode, self.render_size = render_mode, render_size
        self._position = np.zeros(2, dtype=np.float32)
        self._path = [self._position.copy()]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._position = np.zeros(2, dtype=np.float32)
        self._path = [self._position.copy()]
        return self._position.copy(), {"goal": self.goal.copy()}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        inches = self.render_size / 100
        fig = Figure(figsize=(inches, inches), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set(xlim=(-RENDER_LIMIT, RENDER_LIMIT), ylim=(-RENDER_LIMIT, RENDER_LIMIT), xticks=[], yticks=[])
        ax.set_aspect("equal")
        path = np.stack(self._path)
        ax.plot(*self.goal, marker="*", color="C3", markersize=14)
        ax.plot(0, 0, marker="+", color="k")
        ax.plot(path[:, 0], path[:, 1], color="C0")
        ax.plot(*path[-1], marker="o", color="C0", markersize=4)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float32), -MAX_ACTION, MAX_ACTION)
        self._position = (self._position + action).astype(np.float32)
        self._path.append(self._position.copy())
        offset = self._position - self.goal
        reward = -float(np.sqrt((offset**2).sum()))
        terminated = bool(np.all(np.abs(offset) < SUCCESS_RADIUS))
        return self._position.copy(), reward, terminated, False, {"goal": self.goal.copy()}


class Navigation2DVectorEnv(VectorTaskEnv):
    """All episodes of all tasks as one tensor of positions [T, E, 2] on the run's device."""

    def __init__(self, goals: torch.Tensor, episodes_per_task: int) -> None:
        self.goals = goals.unsqueeze(1)  # [T, 1, 2]
        self.num_tasks, self.episodes_per_task, self.device = goals.shape[0], episodes_per_task, goals.device
        single = Navigation2DEnv()
        self.observation_space, self.action_space = single.observation_space, single.action_space
        self._position = torch.zeros(self.num_tasks, episodes_per_task, 2, device=self.device)

    def reset(self, seed: int) -> torch.Tensor:
        self._position = torch.zeros_like(self._position)
        return self._position.clone()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._position = self._position + actions.clamp(-MAX_ACTION, MAX_ACTION)
        offset = self._position - self.goals
        reward = -offset.norm(dim=-1)
        done = (offset.abs() < SUCCESS_RADIUS).all(dim=-1)
        return self._position.clone(), reward, done


class Navigation2D(TaskDistribution):
    """Goals uniform in [−0.5, 0.5]²; see the module docstring for the dynamics and reward."""

    max_episode_steps = 100
    config_file = "configs/navigation-2d.yaml"

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(num_tasks, 2))
        return [{"goal": [float(x), float(y)]} for x, y in goals]

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        return Navigation2DEnv(task)

    def video_env(self, task: dict[str, Any], size: int) -> gym.Env:
        return Navigation2DEnv(task, render_mode="rgb_array", render_size=size)

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> Navigation2DVectorEnv:
        goals = torch.tensor([t["goal"] for t in tasks], dtype=torch.float32, device=device)
        return Navigation2DVectorEnv(goals, episodes_per_task)
