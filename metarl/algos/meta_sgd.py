"""Meta-SGD (Li et al. 2017): per-parameter inner learning rates α, meta-learned with θ.

θᵢ' = θ − α ⊙ ∇θ Lᵢ(θ) (repeated `num_inner_steps` times with the same α), Lᵢ MAML's policy-gradient
loss; α holds one tensor per parameter of θ, initialised to `inner_lr`. The outer step is Adam
(`outer_lr`) on (θ, α) jointly, on MAML's outer loss (surrogate on the validation episodes at θᵢ'(θ, α)).
Adam rather than TRPO: the trust region is a KL in policy space, which constrains θ but not α.

Config keys: `inner_lr` (initial α), `num_inner_steps`, `first_order` (α still learns: θ' is linear
in α), `outer_lr`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metarl.algos.adaptation import Adaptation, inner_loop
from metarl.algos.base import GradientMetaLearner, SampledBatch
from metarl.config import Config
from metarl.policies.batched import Params, detach, stack
from metarl.regularizers.base import Regularizer
from metarl.sampling.episodes import Episodes
from metarl.tasks import TaskDistribution


class _PerParameterAdaptation(Adaptation):
    """θ' from per-parameter rates; `Adaptation`'s Jacobian products assume one scalar rate."""

    def _through(self, vectors: Params, hessians: object) -> Params:
        raise NotImplementedError("Jacobian products through Meta-SGD's per-parameter rates")


class MetaSGD(GradientMetaLearner):
    """MAML whose inner step uses learned per-parameter rates α; Adam on θ and α."""

    def __init__(
        self,
        policy: torch.nn.Module,
        family: TaskDistribution,
        config: Config,
        regularizers: dict[str, tuple[Regularizer, float]] | None = None,
        device: torch.device | str = "cpu",
        **hyperparameters: Any,
    ) -> None:
        self.alpha: Params = {
            name: torch.full_like(p.detach(), config.inner_lr).requires_grad_() for name, p in policy.named_parameters()
        }
        super().__init__(policy, family, config, regularizers, device, **hyperparameters)

    @property
    def inner_lr(self) -> Params:
        return detach(self.alpha)

    def meta_parameters(self) -> list[torch.Tensor]:
        return [*self.policy.parameters(), *self.alpha.values()]

    def adapt(self, params: Params, train: Episodes, first_order: bool) -> Adaptation:
        c = self.config
        loss = lambda adapted: self.inner_objective(adapted, train)  # noqa: E731
        adapted, hessians = inner_loop(stack(params, len(train)), loss, self.alpha, c.num_inner_steps, first_order)
        return _PerParameterAdaptation(adapted, hessians, math.nan)

    def update(self, batch: SampledBatch) -> dict[str, float]:
        metrics = super().update(batch)
        rates = torch.cat([a.detach().reshape(-1) for a in self.alpha.values()])
        metrics.update({"train/alpha_mean": rates.mean().item(), "train/alpha_abs_max": rates.abs().max().item()})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alpha": {n: a.detach().clone() for n, a in self.alpha.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for name, a in self.alpha.items():
                a.copy_(state["alpha"][name])
