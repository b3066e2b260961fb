"""Roll out a meta-batch: one batched policy forward per time step, each task with its own parameters."""

from __future__ import annotations

import torch
from torch import nn

from metarl.policies.batched import sample_actions
from metarl.sampling.episodes import Episodes
from metarl.tasks import VectorTaskEnv


@torch.no_grad()
def sample_episodes(
    policy: nn.Module, params: dict[str, torch.Tensor], env: VectorTaskEnv, horizon: int, seed: int
) -> Episodes:
    """Run one episode of at most `horizon` steps in every env; `params` are stacked per task."""
    obs = env.reset(seed)
    alive = torch.ones(obs.shape[:2], dtype=torch.bool, device=obs.device)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(horizon):
        action = sample_actions(policy, params, obs)
        next_obs, reward, done = env.step(action)
        observations.append(obs)
        actions.append(action)
        masks.append(alive.float())
        rewards.append(reward.float() * masks[-1])
        alive = alive & ~done
        if not alive.any():
            break
        obs = next_obs
    return Episodes(
        observations=torch.stack(observations, dim=2),
        actions=torch.stack(actions, dim=2),
        rewards=torch.stack(rewards, dim=2),
        mask=torch.stack(masks, dim=2),
        success=env.episode_successes(),
    )
