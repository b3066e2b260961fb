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
η halves when the KL is under `inner_kl_target`/1.5 and doubles over 1.5×target), `inner_kl_target` 0.01,
`max_inner_kl` 0 (off; not in the paper: a bound on the pre-update policy's KL per Adam step, against the
one-step collapse on halfcheetah-dir in docs/benchmarks.md).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from metarl import distributed
from metarl.algos.adaptation import Adaptation
from metarl.algos.base import GradientMetaLearner, SampledBatch
from metarl.hyperparameters import (
    BOOLEAN,
    NON_NEGATIVE,
    OPEN_UNIT_INTERVAL,
    POSITIVE,
    POSITIVE_INT,
    Hyperparameter,
    one_of,
)
from metarl.metrics import NON_FINITE
from metarl.policies.batched import Params, policy_kl, stack
from metarl.sampling.episodes import masked_mean


class ProMP(GradientMetaLearner):
    """ProMP: LVC inner step, clipped outer surrogate with an inner-KL penalty, several Adam steps."""

    inner_loss = Hyperparameter("lvc", one_of("lvc", "log-likelihood"), "inner-step objective (ProMP's is lvc)")
    promp_steps = Hyperparameter(5, POSITIVE_INT, "Adam steps on each sampled meta-batch")
    clip_eps = Hyperparameter(0.3, OPEN_UNIT_INTERVAL, "PPO clipping range of the outer likelihood ratio")
    inner_kl_coef = Hyperparameter(5e-4, NON_NEGATIVE, "initial weight η of the KL penalty on the pre-update policy")
    inner_kl_adaptive = Hyperparameter(False, BOOLEAN, "adapt η towards inner_kl_target (halve or double)")
    inner_kl_target = Hyperparameter(0.01, POSITIVE, "KL the adaptive η aims at")
    max_inner_kl = Hyperparameter(
        0.0,
        NON_NEGATIVE,
        "undo an Adam step that moves the pre-update policy further than this KL from the sampling one, and "
        "end the batch's steps there (as PPO's target_kl stops early); 0 turns it off, as the paper",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outer_steps = self.promp_steps
        self.kl_coef = self.inner_kl_coef

    def inner_kl(self, params: Params, batch: SampledBatch) -> torch.Tensor:
        """This rank's share of the mean over tasks of KL(πθo ‖ πθ) on the train observations."""
        train, n = batch.train, len(batch.train)
        kl = policy_kl(self.policy, stack(self.sampling_params, n), stack(params, n), train.observations)
        return batch.task_mean(masked_mean(kl, train.mask))

    def outer_loss(
        self, params: Params, adaptation: Adaptation, batch: SampledBatch, old_log_probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        valid, eps = batch.require_valid(), self.clip_eps
        ratio, advantages = self.surrogate(adaptation.params, batch, old_log_probs), valid.require_advantages()
        clipped = torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
        surrogate = -batch.task_mean(masked_mean(clipped, valid.mask))
        kl = self.inner_kl(params, batch)
        penalties = self.penalties(params, adaptation.params, batch.train, valid, batch.total_tasks)
        parts = {f"regularizer/{name}": value for name, value in penalties.items()}
        loss = self.with_penalties(surrogate + self.kl_coef * kl, penalties)
        return {"loss": loss, "train/surrogate": surrogate, "train/inner_kl": kl, **parts}

    def take_outer_step(self, batch: SampledBatch) -> bool:
        """Adam's step, undone (θ and Adam's moments as before it) when `max_inner_kl` is set and the
        step moved the pre-update policy further than it from πθo."""
        if not self.max_inner_kl:
            return super().take_outer_step(batch)
        params: Params = dict(self.policy.named_parameters())
        before = {name: p.detach().clone() for name, p in params.items()}
        moments = copy.deepcopy(self.optimizer.state_dict())
        super().take_outer_step(batch)
        with torch.no_grad():
            kl = distributed.all_reduce_sum(self.inner_kl(params, batch)).item()
        if kl <= self.max_inner_kl:
            return True
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(before[name])
        self.optimizer.load_state_dict(moments)
        return False

    def update(self, batch: SampledBatch) -> dict[str, float]:
        metrics = super().update(batch)
        # fewer steps than promp_steps without a refusal: the last one was undone (`max_inner_kl`)
        stopped = metrics["train/outer_steps_taken"] < self.outer_steps and not metrics[NON_FINITE]
        metrics["train/outer_step_undone"] = float(stopped)
        # the KL after the last Adam step, as the reference implementation's compute_stats measures it
        with torch.no_grad():
            kl = distributed.all_reduce_sum(self.inner_kl(dict(self.policy.named_parameters()), batch)).item()
        metrics["train/inner_kl_last"] = kl
        if self.inner_kl_adaptive:
            if kl < self.inner_kl_target / 1.5:
                self.kl_coef /= 2
            elif kl > self.inner_kl_target * 1.5:
                self.kl_coef *= 2
        metrics["train/inner_kl_coef"] = self.kl_coef
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "inner_kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kl_coef = float(state["inner_kl_coef"])
