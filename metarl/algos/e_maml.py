"""E-MAML (Stadie et al. 2018): MAML plus the exploration term through the pre-update sampling.

The return after adaptation depends on θ also through which train episodes θ samples. E-MAML adds
that REINFORCE term to MAML's outer objective: for each task, the train episodes' log-probabilities
under θ times the task's post-update return. Here the log-probability is the per-step mean of
log πθ(a|s) over the task's train episodes and the return is the task's mean validation return,
standardised over the meta-batch (a baseline; unbiased up to the task's own share of the mean), so
`exploration_weight` (λ) compares with MAML's normalised-advantage surrogate. `e-maml` takes Adam
steps (`outer_lr`); `e-maml-trpo` MAML-TRPO's trust-region step on the same objective (the ProMP
paper's E-MAML baseline), with MAML-TRPO's keys.

Keys: `exploration_weight` (λ, 1.0), the outer step's; from the run's config: `inner_lr`,
`num_inner_steps`, `first_order`.
"""

from __future__ import annotations

import torch

from metarl import distributed
from metarl.algos.adaptation import Adaptation
from metarl.algos.base import GradientMetaLearner, LearnerMixin, SampledBatch
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.hyperparameters import NUMBER, Hyperparameter
from metarl.policies.batched import Params, log_probs, stack
from metarl.sampling.episodes import masked_mean


class ExplorationTerm(LearnerMixin):
    """E-MAML's exploration term on a meta-learner's outer loss, weighted by `exploration_weight`."""

    exploration_weight = Hyperparameter(1.0, NUMBER, "weight λ of the exploration (REINFORCE) term")

    def exploration(self, params: Params, batch: SampledBatch) -> torch.Tensor:
        """−mean over tasks of mean log πθ(train) · standardised post-update return (this rank's share)."""
        train, valid = batch.train, batch.require_valid()
        returns = valid.episode_returns().mean(-1)
        total, squares = distributed.sum_over_ranks([returns.sum().item(), (returns**2).sum().item()])
        mean = total / batch.total_tasks
        std = max(squares / batch.total_tasks - mean**2, 0.0) ** 0.5
        logp = log_probs(self.policy, stack(params, len(train)), train.observations, train.actions)
        return -batch.task_mean(masked_mean(logp, train.mask) * (returns - mean) / (std + 1e-8))

    def outer_loss(
        self, params: Params, adaptation: Adaptation, batch: SampledBatch, old_log_probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        parts = super().outer_loss(params, adaptation, batch, old_log_probs)
        if self.exploration_weight:
            term = self.exploration(params, batch)
            parts["loss"] = parts["loss"] + self.exploration_weight * term
            parts["train/exploration"] = term
        return parts


class EMAML(ExplorationTerm, GradientMetaLearner):
    """E-MAML with an Adam outer step (`outer_lr`)."""


class EMAMLTRPO(ExplorationTerm, MAMLTRPO):
    """E-MAML with MAML-TRPO's outer step, as the ProMP paper's E-MAML baseline (its
    run_scripts/e-maml_run_mujoco.py: TRPO, max KL 0.01)."""
