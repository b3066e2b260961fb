"""Baselines for `metarl evaluate --baseline`, trained with stable-baselines3 PPO.

pretrained: one PPO policy trained on tasks drawn afresh at every episode, converted into the run's
policy class and adapted exactly like the meta-learned one (same held-out tasks, inner steps,
episodes, seed and inner learning rate).

scratch: PPO from scratch on each of the first held-out tasks, with how many env steps it needs to
reach the meta-learned return after K inner steps, against the K × episodes × horizon env steps per
task the meta-learned policy adapted on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsFloat

import gymnasium as gym
import numpy as np
from torch import nn

from metarl.algos.held_out import AdaptationResult, evaluate_adaptation, held_out_rng
from metarl.checkpoint import write_json
from metarl.errors import MetarlError
from metarl.export import from_sb3_ppo, sb3_policy_kwargs
from metarl.tasks import TaskDistribution

if TYPE_CHECKING:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from metarl.trainer import Trainer

# Spawn key of the pretraining task stream (1 and 2 are validation and test, see metarl.evaluation).
PRETRAIN_STREAM = 3
BASELINES = ("pretrained", "scratch")


class TaskResamplingEnv(gym.Env):
    """The family's env for a new task drawn with `rng` at every reset: one policy for the whole family."""

    def __init__(self, family: TaskDistribution, rng: np.random.Generator) -> None:
        self.family, self.rng = family, rng
        self.env = self._new_env()
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space

    def _new_env(self) -> gym.Env:
        return self.family.make_env(self.family.sample_tasks(1, self.rng)[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.env.close()
        self.env = self._new_env()
        return self.env.reset(seed=int(self.np_random.integers(2**31 - 1)), options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


def _ppo(policy: nn.Module, make_env: Callable[[], gym.Env], steps: int, gamma: float, seed: int) -> PPO:
    """SB3's PPO with its default hyperparameters, the run's network shape and discount, on one env."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    batch_size = min(64, steps)
    n_steps = max(batch_size, min(2048, steps) // batch_size * batch_size)  # tiny budgets still update
    return PPO(
        "MlpPolicy",
        make_vec_env(make_env, n_envs=1, seed=seed),  # adds the Monitor wrapper that reports episode returns
        n_steps=n_steps,
        batch_size=batch_size,
        gamma=gamma,
        policy_kwargs=sb3_policy_kwargs(policy),
        seed=seed,
        device="cpu",
        verbose=0,
    )


def pretrain_ppo(family: TaskDistribution, policy: nn.Module, horizon: int, steps: int, gamma: float, seed: int) -> PPO:
    """PPO trained for `steps` env steps on tasks of the family drawn from the PRETRAIN_STREAM of `seed`."""
    rng = held_out_rng(seed, PRETRAIN_STREAM)
    model = _ppo(policy, lambda: gym.wrappers.TimeLimit(TaskResamplingEnv(family, rng), horizon), steps, gamma, seed)
    return model.learn(total_timesteps=steps)


def _episode_callback() -> tuple[BaseCallback, list[int], list[float]]:
    """A callback recording every finished episode, and its lists: env steps so far at the episode's
    end, and its return (from the Monitor wrapper's `info`)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeReturns(BaseCallback):
        """(env steps so far, return) of every finished episode, from the Monitor wrapper's `info`."""

        def __init__(self) -> None:
            super().__init__()
            self.steps: list[int] = []
            self.returns: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.steps.append(self.num_timesteps)
                    self.returns.append(float(info["episode"]["r"]))
            return True

    callback = EpisodeReturns()
    return callback, callback.steps, callback.returns


@dataclass
class LearningCurve:
    """Episodes of PPO from scratch on one task: env steps at each episode's end, and its return."""

    task: dict[str, Any]
    steps: np.ndarray
    returns: np.ndarray


def train_from_scratch(
    family: TaskDistribution, task: dict[str, Any], policy: nn.Module, horizon: int, steps: int, gamma: float, seed: int
) -> LearningCurve:
    """PPO from scratch on one task for `steps` env steps, recording every episode's return."""
    callback, episode_steps, episode_returns = _episode_callback()
    model = _ppo(policy, lambda: gym.wrappers.TimeLimit(family.make_env(task), horizon), steps, gamma, seed)
    model.learn(total_timesteps=steps, callback=callback)
    return LearningCurve(task, np.asarray(episode_steps, dtype=np.int64), np.asarray(episode_returns))


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the `window` values ending at each value; NaN until `window` values exist."""
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    means = np.full(len(values), np.nan)
    means[window - 1 :] = (sums[window:] - sums[:-window]) / window
    return means


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Curves (steps, values) averaged on the union of their steps, each holding its last value; NaN
    until every curve has a value."""
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    held = []
    for steps, values in curves:
        index = np.searchsorted(steps, grid, side="right") - 1
        held.append(np.where(index >= 0, values[np.maximum(index, 0)], np.nan))
    return grid, np.mean(held, axis=0)


def steps_to_reach(steps: np.ndarray, values: np.ndarray, target: float) -> int | None:
    """The first step at which the curve is at least `target`; None when it never is."""
    reached = np.flatnonzero(values >= target)
    return int(steps[reached[0]]) if reached.size else None


def sample_efficiency(ppo_steps: int | None, meta_steps: int) -> float | None:
    """PPO's env steps to reach the target / the meta-learned policy's adaptation env steps (None: not
    reached, or no adaptation steps to compare with)."""
    return None if ppo_steps is None or meta_steps == 0 else ppo_steps / meta_steps


def _scratch_document(
    curves: list[LearningCurve], targets: np.ndarray, window: int, meta_steps: int, budget: int
) -> dict[str, Any]:
    smoothed = [(c.steps, running_mean(c.returns, window)) for c in curves]
    grid, mean = mean_curve(smoothed)
    target = float(targets.mean())
    reached = steps_to_reach(grid, mean, target)
    per_task = []
    for curve, (steps, values), task_target in zip(curves, smoothed, targets):
        task_reached = steps_to_reach(steps, values, float(task_target))
        per_task.append(
            {
                "task": curve.task,
                "target": float(task_target),
                "steps_to_reach": task_reached,
                "sample_efficiency_ratio": sample_efficiency(task_reached, meta_steps),
                "episode_end_steps": curve.steps.tolist(),
                "episode_returns": curve.returns.tolist(),
            }
        )
    return {
        "tasks": len(curves),
        "ppo_steps_per_task": budget,
        "window_episodes": window,
        "meta_learned_env_steps": meta_steps,
        "target": target,
        "steps_to_reach": reached,
        "sample_efficiency_ratio": sample_efficiency(reached, meta_steps),
        "per_task": per_task,
        "mean_curve": {"steps": grid.tolist(), "return": [None if np.isnan(v) else float(v) for v in mean]},
    }


def plot_scratch_curves(document: dict[str, Any], inner_steps: int, title: str, path: Path) -> None:
    """Return of PPO from scratch against env steps, with the meta-learned return after K steps."""
    from metarl.plotting import finish_axes, new_figure, save_figure

    plt = new_figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    window = document["window_episodes"]
    for task in document["per_task"]:
        returns = running_mean(np.asarray(task["episode_returns"]), window)
        ax.plot(task["episode_end_steps"], returns, color="C0", alpha=0.3, linewidth=0.8)
    mean = document["mean_curve"]
    ax.plot(mean["steps"], [np.nan if v is None else v for v in mean["return"]], color="C0", label="PPO from scratch")
    ax.axhline(document["target"], color="C1", linestyle="--", label=f"meta-learned after {inner_steps} steps")
    if document["meta_learned_env_steps"]:
        ax.axvline(document["meta_learned_env_steps"], color="C1", linestyle=":", label="meta-learned env steps")
    finish_axes(ax, "environment steps per task", f"mean return (last {window} episodes)", title, legend_size=8)
    save_figure(fig, path)


def evaluate_baselines(
    trainer: Trainer,
    result: AdaptationResult,
    kinds: list[str],
    ppo_steps: int,
    scratch_tasks: int,
    episodes: int,
    seed: int,
    run_dir: Path,
) -> tuple[dict[str, Any], list[Path]]:
    """Run the `kinds` of baselines against `result` (the meta-learned evaluation already written by
    `write_evaluation`); add them to adaptation_curve.png and evaluation.json, plot scratch PPO's curve.

    Returns the `baselines` document and the paths written.
    """
    from metarl.plotting import plot_adaptation_curves

    unknown = sorted(set(kinds) - set(BASELINES))
    if unknown:
        raise MetarlError(f"unknown baseline {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    json_path = run_dir / "evaluation.json"
    if not json_path.is_file():
        raise MetarlError(f"{str(json_path)!r} is missing: baselines are added to an evaluation")
    config, family, policy = trainer.config, trainer.family, trainer.policy
    horizon = config.horizon_for(family)
    inner_steps = result.returns.shape[1] - 1
    title = f"{config.env}: adaptation on held-out tasks"
    document: dict[str, Any] = {}
    paths = []
    if "pretrained" in kinds:
        model = pretrain_ppo(family, policy, horizon, ppo_steps, config.gamma, seed)
        pretrained = evaluate_adaptation(
            from_sb3_ppo(policy, model), family, config, result.tasks, inner_steps, episodes, seed, trainer.device
        )
        document["pretrained"] = {
            "ppo_steps": ppo_steps,
            "summary": pretrained.summary(),
            "returns": pretrained.returns.tolist(),
        }
        png = run_dir / "adaptation_curve.png"
        curves = {"meta-learned": result.summary(), "PPO pretrained + adapted": pretrained.summary()}
        plot_adaptation_curves(curves, title, png)
        paths.append(png)
    if "scratch" in kinds:
        n = min(scratch_tasks, len(result.tasks))
        learning_curves = [
            train_from_scratch(family, task, policy, horizon, ppo_steps, config.gamma, seed + i)
            for i, task in enumerate(result.tasks[:n])
        ]
        meta_steps = inner_steps * episodes * horizon
        document["scratch"] = _scratch_document(
            learning_curves, result.returns[:n, -1], episodes, meta_steps, ppo_steps
        )
        png = run_dir / "scratch_ppo_curve.png"
        plot_scratch_curves(document["scratch"], inner_steps, f"{config.env}: PPO from scratch on {n} tasks", png)
        paths.append(png)
    evaluation = json.loads(json_path.read_text())
    evaluation["baselines"] = document
    write_json(json_path, evaluation)
    return document, [*paths, json_path]


def format_baselines(document: dict[str, Any]) -> str:
    """The baselines' headline numbers as lines of text."""
    lines = []
    if "pretrained" in document:
        means = ", ".join(f"{row['mean']:.2f}" for row in document["pretrained"]["summary"])
        lines.append(f"PPO pretrained + adapted, mean return after 0..K steps: {means}")
    if "scratch" in document:
        s = document["scratch"]
        what = (
            f"PPO from scratch ({s['tasks']} tasks) vs the meta-learned return {s['target']:.2f} "
            f"after {s['meta_learned_env_steps']} env steps per task: "
        )
        if s["steps_to_reach"] is None:
            lines.append(what + f"not reached within {s['ppo_steps_per_task']} steps")
        else:
            ratio = s["sample_efficiency_ratio"]
            lines.append(
                what
                + f"reached after {s['steps_to_reach']} steps"
                + ("" if ratio is None else f" ({ratio:.1f}× as many)")
            )
    return "\n".join(lines)
