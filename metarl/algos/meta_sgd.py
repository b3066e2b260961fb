"""Meta-SGD (Li et al. 2017): per-parameter inner learning rates α, meta-learned with θ.

θᵢ' = θ − α ⊙ ∇θ Lᵢ(θ) (repeated `num_inner_steps` times with the same α), Lᵢ the inner loss; α holds
one tensor per parameter of θ, initialised to `inner_lr`. The outer step moves (θ, α) jointly on MAML's
outer loss (surrogate on the validation episodes at θᵢ'(θ, α)):

- `meta-sgd`: Adam (`outer_lr`);
- `meta-sgd-trpo`: MAML-TRPO's trust-region step, the meta-optimizer of MAML's RL experiments. The KL
  is in policy space, and α moves the adapted policies: the Jacobian
  dθᵢ'/d(θ, α) = [I − diag(α)·∇²Lᵢ, −diag(∇Lᵢ)] carries the Fisher to α as to θ.

Config keys: `inner_lr` (initial α), `num_inner_steps`, `first_order` (α still learns: θ' is linear
in α); the outer step's own keys (`metarl list algorithms --verbose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metarl.algos.adaptation import Adaptation, inner_loop
from metarl.algos.base import GradientMetaLearner, LearnerMixin, SampledBatch
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.config import Config
from metarl.policies.batched import Params, detach, stack
from metarl.regularizers.base import Regularizer
from metarl.sampling.episodes import Episodes
from metarl.tasks import TaskDistribution

#: prefix of α's entries beside θ's in the parameters of the TRPO step ("alpha/mean.weight")
ALPHA = "alpha/"


def policy_part(params: Params) -> Params:
    """θ's entries of a parameter mapping that may also hold α's."""
    return {name: p for name, p in params.items() if not name.startswith(ALPHA)}


@dataclass
class PerParameterAdaptation(Adaptation):
    """θᵢ' from per-parameter rates α, with products by the Jacobian dθᵢ'/d(θ, α).

    Step k, θₖ₊₁ = θₖ − α ⊙ gₖ(θₖ), has the Jacobian [I − diag(α) Hₖ, −diag(gₖ)] (Hₖ the inner loss's
    Hessian at θₖ, none in first order): tangents pass through the steps in order, cotangents in reverse
    through the transpose [I − Hₖ diag(α); −diag(gₖ)].
    """

    alpha: Params
    gradients: list[Params]  # each step's inner gradient gₖ, stacked per task

    def jvp(self, v: Params) -> Params:
        """Jᵢ v for every task: v holds θ-shaped entries for θ and, optionally, ALPHA + name for α."""
        tangent = stack({name: v[name] for name in self.alpha}, len(next(iter(self.params.values()))))
        for k, grads in enumerate(self.gradients):
            curvature = self.hessians[k](tangent) if self.hessians else None
            tangent = {
                name: t
                - (self.alpha[name] * curvature[name] if curvature is not None else 0.0)
                - (v[ALPHA + name] * grads[name] if ALPHA + name in v else 0.0)
                for name, t in tangent.items()
            }
        return tangent

    def vjp(self, u: Params) -> Params:
        """Σᵢ Jᵢᵀ uᵢ: u stacked per task; the result has θ's entries and ALPHA + name for α."""
        through_alpha = {name: torch.zeros_like(a) for name, a in self.alpha.items()}
        for k in reversed(range(len(self.gradients))):
            for name, g in self.gradients[k].items():
                through_alpha[name] = through_alpha[name] - (g * u[name]).sum(0)
            if self.hessians:
                curvature = self.hessians[k]({name: self.alpha[name] * w for name, w in u.items()})
                u = {name: w - curvature[name] for name, w in u.items()}
        return {name: w.sum(0) for name, w in u.items()} | {ALPHA + n: g for n, g in through_alpha.items()}


class PerParameterRates(LearnerMixin):
    """Meta-SGD's learned rates α on a meta-learner: its inner step, its outer parameters and checkpoints."""

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

    def step_parameters(self) -> Params:
        """θ's and α's tensors by name (for a TRPO step)."""
        return dict(self.policy.named_parameters()) | {ALPHA + n: a for n, a in self.alpha.items()}

    def adapt(self, params: Params, train: Episodes, first_order: bool) -> PerParameterAdaptation:
        """The inner loop from θ with the rates α: `params`' ALPHA entries where it has them (a TRPO
        candidate), else the learned α."""
        theta = policy_part(params)
        alpha = {name: params.get(ALPHA + name, self.alpha[name]) for name in theta}
        loss = lambda adapted: self.inner_objective(adapted, train)  # noqa: E731
        steps = self.config.num_inner_steps
        adapted, hessians, gradients = inner_loop(stack(theta, len(train)), loss, alpha, steps, first_order)
        return PerParameterAdaptation(adapted, hessians, float("nan"), detach(alpha), gradients)

    def outer_loss(
        self, params: Params, adaptation: Adaptation, batch: SampledBatch, old_log_probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return super().outer_loss(policy_part(params), adaptation, batch, old_log_probs)

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


class MetaSGD(PerParameterRates, GradientMetaLearner):
    """MAML whose inner step uses learned per-parameter rates α; Adam on θ and α."""


class MetaSGDTRPO(PerParameterRates, MAMLTRPO):
    """Meta-SGD with MAML-TRPO's trust-region step on θ and α together (MAML-TRPO's keys)."""
