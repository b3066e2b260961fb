"""Advantages of a batch: GAE against the linear feature baseline, fitted per task."""

from __future__ import annotations

import torch

from metarl.algos.returns import gae
from metarl.baselines import linear_feature_values
from metarl.sampling.episodes import Episodes


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
