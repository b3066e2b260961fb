"""Success rates: envs that report `info["success"]` (as Meta-World does) get it sampled and logged."""

import csv
import json
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl import registry
from metarl.algos.held_out import evaluate_adaptation
from metarl.build import probe_spaces
from metarl.config import build_config
from metarl.evaluation import format_table, write_evaluation
from metarl.policies import GaussianMLP
from metarl.policies.batched import stack
from metarl.sampling import GymVectorTaskEnv, make_vector_env, sample_episodes
from metarl.trainer import Trainer
from metarl_envs.navigation import Navigation2D

RADIUS = 0.3


class ReportsSuccess(gym.Wrapper):
    """Navigation that reports success within RADIUS of the goal (and never terminates early)."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, _, truncated, info = self.env.step(action)
        return obs, reward, False, truncated, {**info, "success": -reward < RADIUS}


class NavigationWithSuccess(Navigation2D):
    def make_env(self, task: dict[str, Any]) -> gym.Env:
        return ReportsSuccess(super().make_env(task))

    def make_vector_env(self, tasks, episodes_per_task, device):
        return None


def test_episode_success_is_any_step_within_reach() -> None:
    family = NavigationWithSuccess()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    env = make_vector_env(family, tasks, 6, torch.device("cpu"))
    torch.manual_seed(0)
    policy = GaussianMLP(env.observation_space, env.action_space, hidden_sizes=[8])
    params = stack({n: p.detach() for n, p in policy.named_parameters()}, 3)
    episodes = sample_episodes(policy, params, env, 20, seed=0)
    # independently: the reward is minus the distance after each step
    expected = ((-episodes.rewards < RADIUS) & (episodes.mask > 0)).any(-1).float()
    assert episodes.success is not None and episodes.success.shape == (3, 6)
    assert torch.equal(episodes.success, expected)
    assert 0 < expected.mean() < 1, "the check needs both outcomes"
    assert episodes[1].success.shape == (6,)


def test_envs_without_success_report_none() -> None:
    family = Navigation2D()
    env = GymVectorTaskEnv(family, family.sample_tasks(2, np.random.default_rng(0)), 2, torch.device("cpu"))
    policy = GaussianMLP(env.observation_space, env.action_space, hidden_sizes=[8])
    params = stack({n: p.detach() for n, p in policy.named_parameters()}, 2)
    assert sample_episodes(policy, params, env, 5, seed=0).success is None


def test_training_logs_success_rates_beside_returns() -> None:
    registry.envs.register("navigation-with-success", NavigationWithSuccess, override=True)
    config = build_config({"env": "navigation-with-success", "meta_batch_size": 4, "fast_batch_size": 4,
                           "horizon": 20, "hidden_sizes": [8], "eval_every": 0, "seed": 0})  # fmt: skip
    metrics = Trainer(config).train(1)[0]
    for when in ("before", "after"):
        assert 0.0 <= metrics[f"success_rate/{when}_adaptation"] <= 1.0
    trained = Trainer(build_config({**config.to_dict(), "env": "navigation-2d"})).train(1)[0]
    assert not any(tag.startswith("success_rate/") for tag in trained)


@pytest.mark.parametrize("radius,expected", [(10.0, 1.0), (0.0, 0.0)])
def test_evaluation_reports_success_rates(tmp_path, radius, expected, monkeypatch) -> None:
    """Every episode succeeds within a radius of 10 and none within 0: the rates pass through unchanged."""
    monkeypatch.setattr(sys.modules[__name__], "RADIUS", radius)
    family = NavigationWithSuccess()
    config = build_config({"env": "navigation-2d", "hidden_sizes": [8], "horizon": 10})
    policy = GaussianMLP(*probe_spaces(family, "navigation-with-success"), hidden_sizes=[8])
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    result = evaluate_adaptation(policy, family, config, tasks, 2, 4, 0, torch.device("cpu"))
    assert result.success.shape == (3, 3) and (result.success == expected).all()
    assert [row["success_rate"] for row in result.summary()] == [expected] * 3
    assert "success rate" in format_table(result.summary())
    write_evaluation(tmp_path, result, {"env": "navigation-with-success"})
    with (tmp_path / "evaluation.csv").open() as f:
        assert [float(r["success_rate"]) for r in csv.DictReader(f)] == [expected] * 3
    assert json.loads((tmp_path / "evaluation.json").read_text())["success"] == result.success.tolist()


def test_evaluation_without_success_has_no_success_column(tmp_path) -> None:
    family = Navigation2D()
    config = build_config({"env": "navigation-2d", "hidden_sizes": [8], "horizon": 10})
    policy = GaussianMLP(*probe_spaces(family, "navigation-2d"), hidden_sizes=[8])
    result = evaluate_adaptation(policy, family, config, family.sample_tasks(2, np.random.default_rng(0)), 1, 2, 0,
                                 torch.device("cpu"))  # fmt: skip
    assert result.success is None and "success_rate" not in result.summary()[0]
    write_evaluation(tmp_path, result, {})
    assert "success" not in (tmp_path / "evaluation.csv").read_text()
