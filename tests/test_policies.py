"""Built-in policies and the vmapped per-task policy calls against plain per-task calls."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence
from torch.func import functional_call

from metarl.policies import CategoricalMLP, GaussianMLP
from metarl.policies.batched import log_probs, policy_kl, stack

OBS = gym.spaces.Box(-1, 1, shape=(3,), dtype=np.float32)


def _perturbed(policy, num_tasks, scale=0.3):
    params = stack({n: p.detach() for n, p in policy.named_parameters()}, num_tasks)
    return {n: p + scale * torch.randn_like(p) for n, p in params.items()}


@pytest.mark.parametrize(
    "policy_cls,action_space",
    [(GaussianMLP, gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32)), (CategoricalMLP, gym.spaces.Discrete(4))],
)
def test_batched_calls_equal_per_task_calls(policy_cls, action_space):
    torch.manual_seed(0)
    policy = policy_cls(OBS, action_space, hidden_sizes=[16, 16])
    p, q = _perturbed(policy, 3), _perturbed(policy, 3)
    obs = torch.randn(3, 5, 7, 3)
    actions = torch.stack(
        [functional_call(policy, {n: v[i] for n, v in p.items()}, (obs[i],)).sample() for i in range(3)]
    )
    batched_logp = log_probs(policy, p, obs, actions)
    batched_kl = policy_kl(policy, p, q, obs)
    assert batched_logp.shape == batched_kl.shape == (3, 5, 7)  # one value per observation
    for i in range(3):
        pi_p = functional_call(policy, {n: v[i] for n, v in p.items()}, (obs[i],))
        pi_q = functional_call(policy, {n: v[i] for n, v in q.items()}, (obs[i],))
        assert torch.allclose(batched_logp[i], pi_p.log_prob(actions[i]), atol=1e-5)
        assert torch.allclose(batched_kl[i], kl_divergence(pi_p, pi_q), atol=1e-5)
    assert (batched_kl > 0).all()


def test_gaussian_std_is_state_independent_and_learnable():
    policy = GaussianMLP(OBS, gym.spaces.Box(-1, 1, shape=(2,)), init_std=0.5)
    pi = policy(torch.randn(10, 3))
    assert torch.allclose(pi.stddev, torch.full((10, 2), 0.5))
    assert policy.log_std.requires_grad


def test_activation_and_sizes_come_from_arguments():
    policy = CategoricalMLP(OBS, gym.spaces.Discrete(3), hidden_sizes=[5, 6, 7], activation="relu")
    linears = [m for m in policy.trunk if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [5, 6, 7]
    assert all(isinstance(m, torch.nn.ReLU) for m in policy.trunk if not isinstance(m, torch.nn.Linear))
