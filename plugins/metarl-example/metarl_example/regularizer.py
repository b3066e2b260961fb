"""`adapted-entropy`: rewards exploration by the adapted policies, R = −(1/T) Σᵢ H[π_θᵢ'] on task i's
validation states (mean over the steps that were taken)."""

from __future__ import annotations

import torch
from torch.func import functional_call

from metarl.regularizers.base import Regularizer, RegularizerContext
from metarl.sampling.episodes import masked_mean


class AdaptedEntropy(Regularizer):
    """Negative mean entropy of each task's adapted policy on its validation observations.

    With a positive weight, minimising the outer loss keeps the post-adaptation policies from
    collapsing; the gradient reaches θ through the inner step because it goes through θᵢ'(θ).
    """

    def __call__(self, ctx: RegularizerContext) -> torch.Tensor:
        entropies = [
            masked_mean(functional_call(ctx.policy, adapted, (episodes.observations,)).entropy(), episodes.mask)
            for adapted, episodes in zip(ctx.adapted_params, ctx.valid_episodes)
        ]
        return -torch.stack(entropies).mean()
