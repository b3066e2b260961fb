"""ProMP: Proximal Meta-Policy Search (Rothfuss et al. 2019).

Inner step on the low-variance curvature (LVC) objective J^LVC(θ) = mean(πθ(a|s)/πθo(a|s) · A) over the
train episodes, πθo the policy that sampled them: at θ = θo its gradient is the policy gradient, and its
Hessian drops the high-variance term of the DiCE/MAML estimator. Outer objective, on the validation
episodes at θᵢ'(θ): the PPO clipped surrogate mean(min(r·A, clip(r, 1 ± ε)·A)), r = πθᵢ'/πθᵢ'_old,
minus η·KL(πθo ‖ πθ) on the train observations (the pre-update policy stays where its samples came
from). `promp_steps` Adam steps per sampled batch, each re-adapting from the current θ with the LVC
ratio as importance weight. With `num_inner_steps` > 1 all inner steps use the same train episodes.

Config keys (defaults from the paper's reference configuration): `inner_lr` 0.1, `outer_lr` 1e-3,
`promp_steps` 5, `clip_eps` 0.3, `inner_kl_coef` 5e-4 (initial η), `inner_kl_adaptive` false (true:
η halves when the KL is under `inner_kl_target`/1.5 and doubles over 1.5×target), `inner_kl_target` 0.01.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metarl.algos.adaptation import Adaptation, inner_loop
from metarl.algos.base import GradientMetaLearner, SampledBatch
from metarl.hyperparameters import BOOLEAN, NON_NEGATIVE, OPEN_UNIT_INTERVAL, POSITIVE, POSITIVE_INT, Hyperparameter
from metarl.policies.batched import Params, log_probs, policy_kl, stack
from metarl.sampling.episodes import Episodes, masked_mean


class ProMP(GradientMetaLearner):
    """ProMP: LVC inner step, clipped outer surrogate with an inner-KL penalty, several Adam steps."""

    promp_steps = Hyperparameter(5, POSITIVE_INT, "Adam steps on each sampled meta-batch")
    clip_eps = Hyperparameter(0.3, OPEN_UNIT_INTERVAL, "PPO clipping range of the outer likelihood ratio")
    inner_kl_coef = Hyperparameter(5e-4, NON_NEGATIVE, "initial weight η of the KL penalty on the pre-update policy")
    inner_kl_adaptive = Hyperparameter(False, BOOLEAN, "adapt η towards inner_kl_target (halve or double)")
    inner_kl_target = Hyperparameter(0.01, POSITIVE, "KL the adaptive η aims at")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outer_steps = self.promp_steps
        self.kl_coef = self.inner_kl_coef
        self.sampling_params: Params = {}  # θo, set when a batch is sampled
        self._last_kl = 0.0

    def sample(self, rng: np.random.Generator) -> SampledBatch:
        self.sampling_params = {n: p.detach().clone() for n, p in self.policy.named_parameters()}
        return super().sample(rng)

    def lvc_loss(self, adapted: Params, train: Episodes) -> torch.Tensor:
        """−J^LVC per task ([T]): the likelihood ratio to the sampling policy times the advantage."""
        with torch.no_grad():
            old = log_probs(self.policy, stack(self.sampling_params, len(train)), train.observations, train.actions)
        ratio = torch.exp(log_probs(self.policy, adapted, train.observations, train.actions) - old)
        return -masked_mean(ratio * train.advantages, train.mask)

    def adapt(self, params: Params, train: Episodes, first_order: bool) -> Adaptation:
        c = self.config
        stacked = stack(params, len(train))
        loss = lambda adapted: self.lvc_loss(adapted, train)  # noqa: E731
        adapted, hessians = inner_loop(stacked, loss, c.inner_lr, c.num_inner_steps, first_order)
        return Adaptation(adapted, hessians, c.inner_lr)

    def inner_kl(self, params: Params, batch: SampledBatch) -> torch.Tensor:
        """This rank's share of the mean over tasks of KL(πθo ‖ πθ) on the train observations."""
        train, n = batch.train, len(batch.train)
        kl = policy_kl(self.policy, stack(self.sampling_params, n), stack(params, n), train.observations)
        return batch.task_mean(masked_mean(kl, train.mask))

    def outer_loss(
        self, params: Params, adaptation: Adaptation, batch: SampledBatch, old_log_probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        valid, eps = batch.valid, self.clip_eps
        ratio = self.surrogate(adaptation.params, batch, old_log_probs)
        clipped = torch.min(ratio * valid.advantages, ratio.clamp(1 - eps, 1 + eps) * valid.advantages)
        surrogate = -batch.task_mean(masked_mean(clipped, valid.mask))
        kl = self.inner_kl(params, batch)
        penalties = self.penalties(params, adaptation.params, batch.train, valid, batch.total_tasks)
        parts = {f"regularizer/{name}": value for name, value in penalties.items()}
        loss = self.with_penalties(surrogate + self.kl_coef * kl, penalties)
        return {"loss": loss, "train/surrogate": surrogate, "train/inner_kl": kl, **parts}

    def after_outer_step(self, parts: dict[str, torch.Tensor]) -> None:
        self._last_kl = parts["train/inner_kl"].item()

    def update(self, batch: SampledBatch) -> dict[str, float]:
        metrics = super().update(batch)
        # the KL before the last Adam step, as in the reference implementation (no extra forward pass)
        metrics["train/inner_kl_last"] = self._last_kl
        if self.inner_kl_adaptive:
            if self._last_kl < self.inner_kl_target / 1.5:
                self.kl_coef /= 2
            elif self._last_kl > self.inner_kl_target * 1.5:
                self.kl_coef *= 2
        metrics["train/inner_kl_coef"] = self.kl_coef
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "inner_kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kl_coef = float(state["inner_kl_coef"])
