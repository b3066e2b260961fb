"""The meta-batch sampler: shapes, masks, per-task parameters and reproducibility."""

import numpy as np
import torch

from metarl.policies import GaussianMLP
from metarl.policies.batched import stack
from metarl.sampling import GymVectorTaskEnv, make_vector_env, sample_episodes
from metarl_envs.navigation import Navigation2D


def _setup(num_tasks=3, episodes=4):
    torch.manual_seed(0)
    family = Navigation2D()
    env0 = family.make_env({"goal": [0, 0]})
    policy = GaussianMLP(env0.observation_space, env0.action_space, hidden_sizes=[16])
    tasks = family.sample_tasks(num_tasks, np.random.default_rng(0))
    params = stack({n: p.detach() for n, p in policy.named_parameters()}, num_tasks)
    return family, policy, tasks, params


def test_shapes_and_returns():
    family, policy, tasks, params = _setup()
    episodes = sample_episodes(policy, params, make_vector_env(family, tasks, 4, torch.device("cpu")), 20, seed=0)
    assert episodes.observations.shape == (3, 4, 20, 2)
    assert episodes.actions.shape == (3, 4, 20, 2)
    assert episodes.rewards.shape == episodes.mask.shape == (3, 4, 20)
    assert torch.allclose(episodes.episode_returns(), (episodes.rewards * episodes.mask).sum(-1))
    assert episodes[1].observations.shape == (4, 20, 2)
    assert episodes.num_steps == 3 * 4 * 20


def test_fast_and_generic_paths_give_the_same_episodes():
    family, policy, tasks, params = _setup()
    torch.manual_seed(5)
    fast = sample_episodes(policy, params, make_vector_env(family, tasks, 4, torch.device("cpu")), 15, seed=0)
    torch.manual_seed(5)
    slow = sample_episodes(policy, params, GymVectorTaskEnv(family, tasks, 4, torch.device("cpu")), 15, seed=0)
    assert torch.allclose(fast.observations, slow.observations, atol=1e-5)
    assert torch.allclose(fast.rewards, slow.rewards, atol=1e-5)
    assert torch.equal(fast.mask, slow.mask)


def test_each_task_acts_with_its_own_parameters():
    family, policy, tasks, params = _setup()
    shifted = {n: p.clone() for n, p in params.items()}
    shifted["mean.bias"][1] += 5.0  # task 1's mean action is pushed far out; others untouched
    torch.manual_seed(1)
    episodes = sample_episodes(policy, shifted, make_vector_env(family, tasks, 64, torch.device("cpu")), 1, seed=0)
    mean_action = episodes.actions[:, :, 0].mean(1)
    assert (mean_action[1] > 4.0).all()
    assert (mean_action[[0, 2]].abs() < 1.0).all()


def test_terminated_episodes_are_masked():
    family = Navigation2D()
    env0 = family.make_env({"goal": [0, 0]})
    policy = GaussianMLP(env0.observation_space, env0.action_space, hidden_sizes=[4])
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
        policy.mean.bias.fill_(0.05)
        policy.log_std.fill_(-20.0)
    params = stack({n: p.detach() for n, p in policy.named_parameters()}, 1)
    env = make_vector_env(family, [{"goal": [0.1, 0.1]}], 2, torch.device("cpu"))
    episodes = sample_episodes(policy, params, env, 10, seed=0)
    # (0.05, 0.05) per step reaches the goal after two steps: the episode stops there
    assert episodes.mask.shape[-1] == 2
    assert episodes.mask.sum().item() == 4
