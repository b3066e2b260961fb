"""Regularizers on the adapted policies π_θᵢ', evaluated on the validation states (masked, one task per row).

Each term is differentiable w.r.t. θ through θᵢ'(θ) (the inner step) and, where π_θ appears, directly.
"""

from __future__ import annotations

import torch

from metarl.errors import ConfigError
from metarl.policies.batched import Params, policy_entropy, policy_kl, stack
from metarl.regularizers.base import Regularizer, RegularizerContext
from metarl.sampling.episodes import masked_mean


def stacked_adapted(ctx: RegularizerContext) -> Params:
    """θᵢ' of every task stacked along a leading task dimension."""
    return {name: torch.stack([p[name] for p in ctx.adapted_params]) for name in ctx.adapted_params[0]}


def valid_states(ctx: RegularizerContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation observations [T, E, H, obs] and their mask [T, E, H]."""
    return (
        torch.stack([e.observations for e in ctx.valid_episodes]),
        torch.stack([e.mask for e in ctx.valid_episodes]),
    )


def kl_to_prior(ctx: RegularizerContext, obs: torch.Tensor) -> torch.Tensor:
    """KL(π_θᵢ'(·|s) ‖ π_θ(·|s)) per observation; `obs` is [T, ...] with row i evaluated for task i."""
    return policy_kl(ctx.policy, stacked_adapted(ctx), stack(ctx.params, len(ctx.adapted_params)), obs)


class Entropy(Regularizer):
    """R = −(1/T) Σᵢ mean over task i's valid states of H[π_θᵢ'(·|s)]; a positive β rewards entropy."""

    def __call__(self, ctx: RegularizerContext) -> torch.Tensor:
        obs, mask = valid_states(ctx)
        return -masked_mean(policy_entropy(ctx.policy, stacked_adapted(ctx), obs), mask).mean()


class KLPrior(Regularizer):
    """R = (1/T) Σᵢ mean over task i's valid states of KL(π_θᵢ'(·|s) ‖ π_θ(·|s))."""

    def __call__(self, ctx: RegularizerContext) -> torch.Tensor:
        obs, mask = valid_states(ctx)
        return masked_mean(kl_to_prior(ctx, obs), mask).mean()


class Consistency(Regularizer):
    """R = (1/T) Σᵢ (dᵢ(other tasks' valid states) − dᵢ(own valid states))², dᵢ(X) = mean_{s∈X} KL(π_θᵢ' ‖ π_θ).

    Penalises any gap (both signs) between how far adaptation to task i moves the policy on the other
    tasks' states and on its own; see docs/plugins.md. Needs at least two tasks; costs T times the
    policy evaluations of `KLPrior`.
    """

    #: tasks it needs in each process's part of the meta-batch (`metarl.distributed.check_nproc`)
    min_tasks = 2

    def __call__(self, ctx: RegularizerContext) -> torch.Tensor:
        num_tasks = len(ctx.adapted_params)
        if num_tasks < 2:
            raise ConfigError("regularizer 'consistency' needs meta_batch_size >= 2 (other tasks' states)")
        obs, mask = valid_states(ctx)
        # every adapted policy on every task's states: kl[i, j] is π_θᵢ' on task j's states, [T, T, E, H]
        kl = kl_to_prior(ctx, obs.unsqueeze(0).expand(num_tasks, *obs.shape))
        sums = (kl * mask).sum((-2, -1))  # [T, T]
        counts = mask.sum((-2, -1))  # [T]
        own, others = sums.diagonal(), sums.sum(1) - sums.diagonal()
        gap = others / (counts.sum() - counts).clamp(min=1.0) - own / counts.clamp(min=1.0)
        return (gap**2).mean()
