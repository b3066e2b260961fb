"""Roll out a meta-batch: one batched policy forward per time step, each task with its own parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from metarl.policies.batched import sample_actions
from metarl.sampling.episodes import Episodes
from metarl.tasks import VectorTaskEnv


@contextmanager
def one_torch_thread(device: torch.device) -> Iterator[None]:
    """Torch on one CPU thread for a while: during rollouts the cores belong to the env steppers
    (MuJoCo's rollout threads, sampler workers), and the policy forward of one step is small, so
    torch's idle intra-op threads would only spin against them."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def sample_episodes(
    policy: nn.Module, params: dict[str, torch.Tensor], env: VectorTaskEnv, horizon: int, seed: int
) -> Episodes:
    """Run one episode of at most `horizon` steps in every env; `params` are stacked per task."""
    with one_torch_thread(next(iter(params.values())).device):
        return _rollout(policy, params, env, horizon, seed)


def _rollout(
    policy: nn.Module, params: dict[str, torch.Tensor], env: VectorTaskEnv, horizon: int, seed: int
) -> Episodes:
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
