"""The inner loop: θᵢ' = θ − α ∇θ Lᵢ(θ) for every task of the meta-batch at once."""

from __future__ import annotations

import torch
from torch import nn

from metarl.policies.batched import Params, log_probs, stack
from metarl.sampling.episodes import Episodes, masked_mean


def policy_gradient_loss(policy: nn.Module, params: Params, episodes: Episodes) -> torch.Tensor:
    """REINFORCE loss −mean(log π(a|s)·A) of each task with its own stacked parameters; shape [T]."""
    logp = log_probs(policy, params, episodes.observations, episodes.actions)
    return -masked_mean(logp * episodes.advantages, episodes.mask)


def adapt(
    policy: nn.Module, params: Params, episodes: Episodes, lr: float, num_steps: int, first_order: bool
) -> Params:
    """Adapted parameters stacked per task, differentiable w.r.t. `params` (first order: only directly)."""
    return adapt_stacked(policy, stack(params, len(episodes)), episodes, lr, num_steps, first_order)


def adapt_stacked(
    policy: nn.Module, stacked: Params, episodes: Episodes, lr: float, num_steps: int, first_order: bool
) -> Params:
    """Inner steps from per-task parameters `stacked` (leading task dimension).

    The per-task losses are summed: task i's loss depends only on slice i of the stacked parameters,
    so one gradient of the sum holds every task's own gradient.
    """
    adapted = stacked
    for _ in range(num_steps):
        loss = policy_gradient_loss(policy, adapted, episodes).sum()
        grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
        adapted = {name: p - lr * g for (name, p), g in zip(adapted.items(), grads)}
    return adapted
