"""RL²: the trial env's observation layout, the learner through the trainer, checkpoints, evaluation."""

from __future__ import annotations

import io
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from metarl import registry
from metarl.algos.base import MetaLearner
from metarl.algos.rl2 import EPISODES_PER_TRIAL, RL2, TRIAL_RETURNS, RL2Env
from metarl.cli import main
from metarl.config import build_config
from metarl.trainer import Trainer
from metarl_envs.bandit import BernoulliBandit
from metarl_envs.navigation import Navigation2D

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"algo": "rl2", "meta_batch_size": 4, "horizon": 20, "eval_every": 0, "seed": 0}


@pytest.fixture(scope="module")
def trained():
    """A trainer that ran two rl2 iterations on navigation-2d, with their metrics."""
    torch.set_num_threads(1)
    trainer = Trainer(build_config(Navigation2D.reference_config(), SMALL))
    return trainer, trainer.train(2)


def test_observation_holds_previous_action_reward_and_done():
    env = RL2Env(Navigation2D(), horizon=3, rng=np.random.default_rng(0))
    obs, info = env.reset(seed=0)
    goal = np.asarray(info["task"]["goal"])
    assert env.observation_space.shape == (2 + 2 + 2,)
    np.testing.assert_array_equal(obs, np.zeros(6))  # origin, no previous action, reward 0, not done
    # navigation's actions are bounded by ±0.1; the policy acts in [−1, 1]
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action = np.array([0.5, -1.0], dtype=np.float32)
    obs, reward, terminated, truncated, _ = env.step(action)
    assert not terminated and not truncated
    applied = np.array([0.05, -0.1])
    np.testing.assert_allclose(obs[:2], applied, rtol=1e-6)
    np.testing.assert_allclose(obs[2:4], action)
    assert obs[4] == pytest.approx(reward) == pytest.approx(-np.linalg.norm(applied - goal), rel=1e-5)
    assert obs[5] == 0.0
    # out-of-bounds actions appear clipped, as the env applied them
    obs, *_ = env.step(np.array([3.0, 0.0]))
    np.testing.assert_allclose(obs[2:4], [1.0, 0.0])
    np.testing.assert_allclose(obs[:2], applied + [0.1, 0.0], rtol=1e-6)


def test_trial_ends_after_its_episodes_and_the_task_changes_between_trials():
    env = RL2Env(Navigation2D(), horizon=3, rng=np.random.default_rng(0))
    obs, info = env.reset(seed=0)
    first_task = info["task"]
    ends, step_count = [], 0
    while True:
        obs, reward, terminated, truncated, info = env.step(np.zeros(2))
        step_count += 1
        assert info["task"] == first_task and not truncated
        if obs[-1] == 1.0:
            ends.append(step_count)
            # the next episode starts again from the origin, the flag and last reward are visible
            np.testing.assert_array_equal(obs[:2], [0.0, 0.0])
            assert obs[4] == pytest.approx(reward)
        if terminated:
            break
    assert ends == [3 * k for k in range(1, EPISODES_PER_TRIAL + 1)]
    assert len(info[TRIAL_RETURNS]) == EPISODES_PER_TRIAL
    assert info[TRIAL_RETURNS][0] == pytest.approx(3 * -np.linalg.norm(first_task["goal"]), rel=1e-5)
    _, info = env.reset()
    assert info["task"] != first_task


def test_discrete_spaces_are_one_hot():
    family = BernoulliBandit()
    env = RL2Env(family, horizon=2, rng=np.random.default_rng(0))
    obs, _ = env.reset(seed=0)
    n = env.action_space.n
    obs, reward, *_ = env.step(1)
    action_part = obs[env.obs_dim : env.obs_dim + n]
    np.testing.assert_array_equal(action_part, np.eye(n)[1])
    assert obs[-2] == reward


def test_rl2_is_found_through_its_entry_point():
    cls = registry.algorithms.load("rl2")
    assert cls is RL2 and issubclass(cls, MetaLearner)


def test_short_run_has_finite_metrics(trained):
    trainer, history = trained
    assert len(history) == 2
    for metrics in history:
        for key in (
            "return/before_adaptation",
            "return/after_adaptation",
            "perf/env_steps",
            "perf/env_steps_per_s",
            "perf/iteration_s",
            "perf/sampling_s",
            "perf/adaptation_s",
            "perf/outer_step_s",
        ):
            assert math.isfinite(metrics[key]), key
        assert "train/line_search_accepted" not in metrics and metrics["train/non_finite"] == 0.0
        assert metrics["perf/env_steps"] == SMALL["meta_batch_size"] * EPISODES_PER_TRIAL * SMALL["horizon"]


def _actions(learner: RL2, observations: np.ndarray) -> np.ndarray:
    starts = np.ones(len(observations), dtype=bool)
    actions, _ = learner.model.predict(observations, episode_start=starts, deterministic=True)
    return actions


def test_checkpoint_state_round_trips(trained):
    trainer, _ = trained
    buffer = io.BytesIO()
    torch.save(trainer.learner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = Trainer(build_config(Navigation2D.reference_config(), {**SMALL, "seed": 1})).learner
    observations = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    assert not np.allclose(_actions(fresh, observations), _actions(trainer.learner, observations))
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(_actions(fresh, observations), _actions(trainer.learner, observations))
    assert fresh.model.num_timesteps == trainer.learner.model.num_timesteps


def test_evaluate_returns_one_column_per_episode_of_the_trial(trained):
    trainer, _ = trained
    tasks = trainer.family.sample_tasks(3, np.random.default_rng(5))
    result = trainer.evaluate(tasks, 2, 1, 0)
    assert result.returns.shape == (3, 3)
    assert np.isfinite(result.returns).all()
    assert result.adapted_params == {}
    again = trainer.evaluate(tasks, 2, 1, 0)
    np.testing.assert_array_equal(result.returns, again.returns)


def test_cli_evaluates_an_rl2_run(tmp_path, capsys):
    trainer = Trainer(build_config(Navigation2D.reference_config(), {**SMALL, "checkpoint_every": 1}))
    run_dir = trainer.start_run(tmp_path)
    trainer.train(1)
    assert main(["evaluate", str(run_dir), "--steps", "2", "--tasks", "3", "--episodes", "1"]) == 0
    assert (run_dir / "evaluation.csv").is_file()
    lines = (run_dir / "evaluation.csv").read_text().splitlines()
    assert len(lines) == 1 + 3  # header and steps 0..2
    capsys.readouterr()
    out = tmp_path / "model.zip"
    assert main(["adapt", str(run_dir), "--task", '{"goal": [0.1, 0.1]}', "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "adapts through memory" in line and not out.exists()


@pytest.mark.slow
def test_short_run_improves_the_return_after_adaptation():
    """40 PPO updates on navigation-2d trials (20 tasks × 2 episodes × 20 steps each): the return of the
    trials' second episode, after a first episode of experience, rises above where it started."""
    config = build_config(
        Navigation2D.reference_config(),
        {**SMALL, "meta_batch_size": 20, "horizon": 20, "outer_lr": 3e-3},
    )
    history = Trainer(config).train(40)
    after = np.array([m["return/after_adaptation"] for m in history])
    assert after[-10:].mean() > after[:10].mean() + 0.8, after.round(2)


def test_lstm_over_whole_sequences_matches_sb3_contribs_step_by_step_loop():
    """`_lstm_over_sequences` against sb3-contrib's own `_process_sequence` (which steps the LSTM one
    time step at a time whenever a batch holds an episode start): same outputs, states and gradients,
    for padded sequences whose first step does or does not start an episode."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    from metarl.algos.rl2 import _lstm_over_sequences

    torch.manual_seed(0)
    lstm = nn.LSTM(5, 8)
    n_seq, length = 4, 7
    features = torch.randn(n_seq * length, 5, requires_grad=True)
    states = (torch.randn(1, n_seq, 8), torch.randn(1, n_seq, 8))
    starts = torch.zeros(n_seq, length)
    starts[[0, 2], 0] = 1.0  # sequences 0 and 2 begin an episode, 1 and 3 continue one
    results = []
    for process in (RecurrentActorCriticPolicy._process_sequence, _lstm_over_sequences):
        output, (h, c) = process(features, states, starts.flatten(), lstm)
        (grad,) = torch.autograd.grad((output.sin().sum() + h.sum() + c.sum()), features)
        results.append((output, h, c, grad))
    for expected, actual in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    # a start after the first step falls back to the loop, so the result still matches
    starts[1, 3] = 1.0
    loop, _ = RecurrentActorCriticPolicy._process_sequence(features, states, starts.flatten(), lstm)
    fast, _ = _lstm_over_sequences(features, states, starts.flatten(), lstm)
    torch.testing.assert_close(fast, loop)
    assert not torch.allclose(fast, results[0][0])


def test_network_and_epoch_keys_reach_recurrent_ppo():
    """`lstm_hidden_size`, `net_arch` and `ppo_epochs` configure sb3-contrib's model; the defaults are its own."""
    small = {**SMALL, "meta_batch_size": 2, "horizon": 5}
    default = Trainer(build_config(Navigation2D.reference_config(), small)).learner
    assert default.model.policy.lstm_actor.hidden_size == 256 and default.model.n_epochs == 10
    overrides = {"lstm_hidden_size": 16, "net_arch": [], "ppo_epochs": 3}
    learner = Trainer(build_config(Navigation2D.reference_config(), {**small, "algo_kwargs": overrides})).learner
    policy = learner.model.policy
    assert policy.lstm_actor.hidden_size == policy.lstm_critic.hidden_size == 16
    assert policy.action_net.in_features == policy.value_net.in_features == 16  # no layers after the LSTM
    assert learner.model.n_epochs == 3
