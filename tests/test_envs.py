"""Every registered task family: contract, Gymnasium checks, and the fast path equal to the generic one."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from metarl import registry
from metarl.sampling.vector_env import GymVectorTaskEnv

FAMILIES = registry.envs.names()


@pytest.mark.parametrize("name", FAMILIES)
def test_family_contract_and_check_env(name):
    family = registry.envs.load(name)()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    assert len(tasks) == 3
    assert json.loads(json.dumps(tasks)) == tasks  # JSON-serialisable
    assert tasks == family.sample_tasks(3, np.random.default_rng(0))  # the generator decides everything
    assert tasks != family.sample_tasks(3, np.random.default_rng(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns about unbounded observation spaces
        check_env(family.make_env(tasks[0]), skip_render_check=True)


@pytest.mark.parametrize(
    "env_id,task",
    [
        ("metarl/Navigation2D-v0", {"goal": [0.3, -0.2]}),
        ("metarl/Bandit-v0", {"means": [0.1, 0.9, 0.5]}),
        ("metarl/TabularMDP-v0", {"transitions": np.full((3, 2, 3), 1 / 3).tolist(), "rewards_mean": [[1, 2]] * 3}),
    ],
)
def test_gymnasium_ids_take_the_task_as_keyword(env_id, task):
    env = gym.make(f"metarl_envs:{env_id}", task=task)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.step(env.action_space.sample())


def _navigation_rollout(env, actions):
    env.reset(0)
    out = []
    for a in actions:
        obs, reward, done = env.step(a)
        out.append((obs, reward, done))
    return out


def test_navigation_fast_path_equals_gymnasium_env():
    family = registry.envs.load("navigation-2d")()
    tasks = family.sample_tasks(3, np.random.default_rng(0)) + [{"goal": [0.05, 0.0]}]
    torch.manual_seed(0)
    actions = [torch.rand(4, 2, 2) * 0.3 - 0.15 for _ in range(6)]
    actions[0][3] = torch.tensor([0.05, 0.0])  # task 3 reaches its goal on the first step
    fast = _navigation_rollout(family.make_vector_env(tasks, 2, torch.device("cpu")), actions)
    slow = _navigation_rollout(GymVectorTaskEnv(family, tasks, 2, torch.device("cpu")), actions)
    assert fast[0][2][3].all() and slow[0][2][3].all()
    running = torch.ones(4, 2, dtype=torch.bool)  # the generic path stops stepping finished episodes
    for (fo, fr, fd), (so, sr, sd) in zip(fast, slow):
        assert torch.allclose(fo[running], so[running], atol=1e-6)
        assert torch.allclose(fr[running], sr[running], atol=1e-6)
        assert torch.equal(fd[running], sd[running])
        running &= ~sd


@pytest.mark.parametrize("name", ["bandit", "tabular-mdp"])
def test_stochastic_fast_path_has_the_reference_statistics(name):
    """Same task, many episodes: the tensor env's mean reward per action matches the Gymnasium env's."""
    family = registry.envs.load(name)()
    task = family.sample_tasks(1, np.random.default_rng(3))[0]
    episodes = 4000
    fast = family.make_vector_env([task], episodes, torch.device("cpu"))
    fast.reset(0)
    actions = torch.arange(episodes).remainder(fast.action_space.n).view(1, episodes)
    _, fast_reward, _ = fast.step(actions)
    env = family.make_env(task)
    env.reset(seed=0)
    slow_reward = []
    for a in actions[0].tolist():
        env.reset()
        slow_reward.append(env.step(a)[1])
    slow_reward = torch.tensor(slow_reward)
    for a in range(fast.action_space.n):
        pick = actions[0] == a
        assert abs(fast_reward[0][pick].mean() - slow_reward[pick].mean()) < 0.12
