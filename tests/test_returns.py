"""GAE, discounted returns and the linear baseline against independent computations."""

import numpy as np
import torch

from metarl.sampling import Episodes
from metarl.sampling.advantages import discounted_returns, gae, linear_feature_values


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the episode ended after three steps
    gamma, lam = 0.9, 0.8
    # deltas by hand: δ2 = 3 − 1.5, δ1 = 2 + 0.9·1.5 − 1, δ0 = 1 + 0.9·1 − 0.5
    d2, d1, d0 = 1.5, 2.35, 1.4
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    expected = torch.tensor([[a0, a1, a2, 0.0]])
    assert torch.allclose(gae(rewards, values, mask, gamma, lam), expected, atol=1e-6)


def test_gae_with_lambda_one_is_return_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.ones(3, 7)
    advantages = gae(rewards, values, mask, gamma=0.95, lam=1.0)
    assert torch.allclose(advantages, discounted_returns(rewards, mask, 0.95) - values, atol=1e-5)


def test_discounted_returns_by_loop():
    rewards = np.array([1.0, -1.0, 2.0, 0.5])
    expected = [sum(0.9**k * rewards[t + k] for k in range(4 - t)) for t in range(4)]
    got = discounted_returns(torch.tensor(rewards).unsqueeze(0), torch.ones(1, 4), 0.9)
    assert np.allclose(got.numpy()[0], expected)


def test_linear_baseline_is_per_task_ridge_regression():
    torch.manual_seed(1)
    num_tasks, episodes, horizon = 3, 4, 6
    obs = torch.randn(num_tasks, episodes, horizon, 2, dtype=torch.float64)
    rewards = torch.randn(num_tasks, episodes, horizon, dtype=torch.float64)
    mask = torch.ones(num_tasks, episodes, horizon, dtype=torch.float64)
    batch = Episodes(obs, torch.zeros_like(obs), rewards, mask)
    values = linear_feature_values(batch, gamma=0.99, reg=1e-5)
    returns = discounted_returns(rewards, mask, 0.99)
    t = np.arange(horizon) / 100.0
    for i in range(num_tasks):
        o = obs[i].numpy()
        tt = np.broadcast_to(t[None, :, None], (episodes, horizon, 1))
        x = np.concatenate([o, o**2, tt, tt**2, tt**3, np.ones_like(tt)], axis=-1).reshape(-1, 8)
        w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(8), x.T @ returns[i].numpy().reshape(-1))
        assert np.allclose(values[i].numpy().reshape(-1), x @ w, atol=1e-5)
