"""Linear feature baseline (Duan et al. 2016), fitted per task on that task's episodes, all tasks at once."""

from __future__ import annotations

import torch

from metarl.algos.returns import discounted_returns
from metarl.sampling.episodes import Episodes


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
