"""Advantage estimation, per task of a meta-batch: discounted returns, a linear feature baseline
(Duan et al. 2016) fitted per task, GAE(γ, λ) against it, and per-task standardisation.

Every function works over the time dimension (the last one) for all tasks and episodes at once.
"""

from __future__ import annotations

import torch

from metarl.sampling.episodes import Episodes


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = Σ_k γ^k r_{t+k} within each episode; [..., H]."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running * mask[..., t]
        returns[..., t] = running
    return returns * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """GAE(γ, λ) advantages; the value after the last step of an episode is taken as 0."""
    values = values * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = deltas[..., t] + gamma * lam * running
        advantages[..., t] = running
    return advantages * mask


def _features(episodes: Episodes) -> torch.Tensor:
    obs, mask = episodes.observations, episodes.mask.unsqueeze(-1)
    horizon = obs.shape[-2]
    t = (torch.arange(horizon, device=obs.device, dtype=obs.dtype) / 100.0).view(horizon, 1).expand(*obs.shape[:-1], 1)
    return torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], dim=-1) * mask


def linear_feature_values(episodes: Episodes, gamma: float, reg: float = 1e-5) -> torch.Tensor:
    """Value estimates [T, E, H] from a ridge regression of discounted returns on per-task features.

    The ridge coefficient grows tenfold (up to five times) for a task whose normal equations are not
    positive definite.
    """
    feats = _features(episodes).double()  # [T, E, H, F]
    targets = discounted_returns(episodes.rewards, episodes.mask, gamma).double()
    num_tasks, num_features = feats.shape[0], feats.shape[-1]
    x = feats.reshape(num_tasks, -1, num_features)
    y = targets.reshape(num_tasks, -1, 1)
    gram, rhs = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y
    eye = torch.eye(num_features, dtype=x.dtype, device=x.device)
    coeff = torch.full((num_tasks, 1, 1), reg, dtype=x.dtype, device=x.device)
    for _ in range(5):
        chol, info = torch.linalg.cholesky_ex(gram + coeff * eye)
        failed = (info > 0).view(-1, 1, 1)
        if not failed.any():
            break
        coeff = torch.where(failed, coeff * 10, coeff)
    weights = torch.cholesky_solve(rhs, chol)
    return (x @ weights).view_as(targets).to(episodes.rewards.dtype)


def compute_advantages(episodes: Episodes, gamma: float, lam: float, normalize: bool) -> torch.Tensor:
    """GAE against a linear feature baseline fitted per task; normalized per task if asked."""
    values = linear_feature_values(episodes, gamma)
    advantages = gae(episodes.rewards, values, episodes.mask, gamma, lam)
    if normalize:
        mask = episodes.mask
        count = mask.sum((-2, -1), keepdim=True).clamp(min=1.0)
        mean = advantages.sum((-2, -1), keepdim=True) / count
        var = (((advantages - mean) * mask) ** 2).sum((-2, -1), keepdim=True) / count
        advantages = (advantages - mean) / (var.sqrt() + 1e-8) * mask
    return advantages
