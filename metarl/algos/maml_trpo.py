"""MAML with a TRPO outer step (Finn et al. 2017), all tasks of the meta-batch batched with torch.func.

One meta-iteration, top to bottom (`MAMLTRPO.step`):
  1. sample tasks with the run's numpy Generator;
  2. roll out `fast_batch_size` episodes per task with θ, all tasks stepped together;
  3. per task: fit the linear baseline, GAE advantages;
  4. inner step(s) θᵢ' = θ − α ∇θ Lᵢ(θ) for all tasks at once, keeping the graph unless first order;
  5. roll out validation episodes with each θᵢ';
  6. outer objective: mean over tasks of the surrogate on validation episodes at θᵢ'(θ), plus β·R terms;
  7. TRPO: conjugate gradient on Fisher-vector products of the mean KL through the inner step,
     backtracking line search that needs both KL < max_kl and a real improvement, else θ unchanged.

Across processes (`metarl.distributed`), every rank draws the same task list and takes its own
contiguous slice; per-task terms are summed over ranks and divided by the meta-batch size wherever
a value enters the update (outer loss, its gradient, each Fisher-vector product, the line-search
checks), so the update equals the single-process one on the same episodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.profiler import record_function

from metarl import distributed
from metarl.algos.adaptation import Adaptation
from metarl.algos.base import MetaLearner, SampledBatch, finite
from metarl.algos.curvature import fisher_product
from metarl.algos.trpo import flatten, natural_step, unflatten
from metarl.hyperparameters import (
    FRACTION,
    NON_NEGATIVE,
    OPEN_UNIT_INTERVAL,
    POSITIVE,
    POSITIVE_INT,
    Hyperparameter,
    one_of,
)
from metarl.policies.batched import Params, detach, policy_kl_from
from metarl.sampling.episodes import step_weights


@dataclass
class OuterObjective:
    """The outer objective at one θ: the learners' shared `outer_loss` parts ("loss", "train/surrogate",
    "regularizer/NAME", and any a subclass adds), and the mean KL to the sampling policies.

    Each value is this rank's share (its tasks' terms over the meta-batch size): summed over ranks,
    the meta-batch's value. In a single process, the value itself.
    """

    parts: dict[str, torch.Tensor]
    kl: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.parts["loss"]


class MAMLTRPO(MetaLearner):
    """MAML (Finn et al. 2017) with a TRPO outer step through the inner step (conjugate gradient on
    Fisher-vector products, backtracking line search); `step(rng)` comes from `MetaLearner`."""

    max_kl = Hyperparameter(0.01, POSITIVE, "trust region: largest mean KL of an accepted outer step")
    cg_iters = Hyperparameter(10, POSITIVE_INT, "conjugate-gradient iterations for the step direction")
    cg_damping = Hyperparameter(1e-5, NON_NEGATIVE, "damping added to the Fisher-vector products")
    cg_subsample = Hyperparameter(
        1.0, FRACTION, "fraction of each task's episodes in the Fisher-vector products (TRPO's subsampled Fisher)"
    )
    fisher_products = Hyperparameter(
        "exact",
        one_of("exact", "finite-difference"),
        "Fisher-vector products: exact (Σᵢ Jᵢᵀ Fᵢ Jᵢ v) or finite-difference (symmetric differences of the "
        "KL's gradient through the inner step, as ProMP's reference TRPO)",
    )
    fd_eps = Hyperparameter(1e-5, POSITIVE, "finite-difference step ε: the KL gradient at θ ± ε·v")
    ls_max_steps = Hyperparameter(15, POSITIVE_INT, "backtracking line-search steps")
    ls_backtrack_ratio = Hyperparameter(0.8, OPEN_UNIT_INTERVAL, "step shrink factor per backtracking step")
    _kl_cache: tuple[SampledBatch, Callable[[Params], torch.Tensor]] | None = None

    def objective(self, params: Params, adapted: Params, batch: SampledBatch) -> OuterObjective:
        """`outer_loss` at θ = `params` with the adapted parameters `adapted`, and the mean KL."""
        return OuterObjective(self._loss_parts(params, adapted, batch), self._mean_kl(adapted, batch))

    def _loss_parts(self, params: Params, adapted: Params, batch: SampledBatch) -> dict[str, torch.Tensor]:
        return self.outer_loss(params, replace(batch.adaptation, params=adapted), batch, batch.require_old_log_probs())

    def _mean_kl(self, adapted: Params, batch: SampledBatch) -> torch.Tensor:
        """Mean over tasks of the KL from the sampling policies to the policies at `adapted` (this rank's share)."""
        return (self._kl_from_sampling(batch)(adapted) * _kl_weights(batch)).sum()

    def _kl_from_sampling(self, batch: SampledBatch) -> Callable[[Params], torch.Tensor]:
        """adapted ↦ the KL from the sampling policies per validation step, their forward pass computed
        once per batch (the line search evaluates it at every step)."""
        if self._kl_cache is None or self._kl_cache[0] is not batch:
            valid = batch.require_valid()
            self._kl_cache = (batch, policy_kl_from(self.policy, batch.require_old_adapted(), valid.observations))
        return self._kl_cache[1]

    def _fisher_product(
        self, params: Params, adaptation: Adaptation, batch: SampledBatch
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ (∇²θ KL + damping·I) v, the sum over all ranks' tasks.

        Exact: Σᵢ Jᵢᵀ Fᵢ Jᵢ v, Fᵢ the KL's Hessian at θᵢ', taken w.r.t. θᵢ' directly. The chain rule's
        other term, ∇θᵢ' KL · ∇²θ θᵢ', vanishes because the KL is minimal (zero) at θ. This replaces a
        third-order backward through the inner step by second-order ones. Finite difference:
        (g(θ + εv) − g(θ − εv)) / 2ε, g the KL's gradient through a new inner step at each point.

        With `cg_subsample` < 1 the product uses only the first that fraction of each task's episodes
        (train episodes for Jᵢ, validation episodes for Fᵢ), as TRPO estimates the Fisher on a
        subsample; the gradient, the step's KL scaling and the line search use every episode.
        """
        sub = self._subsample(batch)
        if self.fisher_products == "finite-difference":
            curvature = self._finite_difference_product(params, sub)
        else:
            if sub is not batch:
                adaptation = self.adapt(params, sub.train, self.config.first_order)
            fisher = fisher_product(
                self.policy, sub.require_old_adapted(), sub.require_valid().observations, _kl_weights(sub)
            )

            def curvature(v: torch.Tensor) -> torch.Tensor:
                pulled = adaptation.vjp(fisher(adaptation.jvp(unflatten(v, params))))
                return distributed.all_reduce_sum(flatten([pulled[name] for name in params]))

        damping: float = self.cg_damping
        return lambda v: curvature(v) + damping * v

    def _finite_difference_product(self, params: Params, batch: SampledBatch) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ symmetric difference of the mean KL's gradient at θ ± ε·v, each through its own inner step."""
        eps: float = self.fd_eps

        def kl_gradient(theta: Params) -> torch.Tensor:
            adaptation = self.adapt(theta, batch.train, self.config.first_order)
            adapted = {name: p.detach().requires_grad_() for name, p in adaptation.params.items()}
            kl = self._mean_kl(adapted, batch)
            return distributed.all_reduce_sum(self._gradient(kl, theta, adapted, adaptation))

        def product(v: torch.Tensor) -> torch.Tensor:
            step = unflatten(eps * v, params)
            plus, minus = (
                kl_gradient({name: (p + sign * step[name]).detach().requires_grad_() for name, p in params.items()})
                for sign in (1.0, -1.0)
            )
            return (plus - minus) / (2 * eps)

        return product

    def _gradient(self, loss: torch.Tensor, params: Params, adapted: Params, adaptation: Adaptation) -> torch.Tensor:
        """∇θ of a loss of θ and of the adapted parameters (a leaf here): the direct part plus
        Σᵢ Jᵢᵀ ∇θᵢ' loss, with the same Jacobian products as the Fisher's."""
        both = [*params.values(), *adapted.values()]
        grads = torch.autograd.grad(loss, both, allow_unused=True, materialize_grads=True)
        direct, through = grads[: len(params)], dict(zip(adapted, grads[len(params) :]))
        pulled = adaptation.vjp(through)
        return flatten([d + pulled[name] for d, name in zip(direct, params)])

    def _subsample(self, batch: SampledBatch) -> SampledBatch:
        """The first `cg_subsample` of each task's episodes (`batch` itself when that is all of them)."""
        episodes = batch.train.rewards.shape[1]
        keep = max(1, math.ceil(self.cg_subsample * episodes))
        if keep >= episodes:
            return batch
        train, valid = batch.train.first_episodes(keep), batch.require_valid().first_episodes(keep)
        return replace(batch, train=train, valid=valid, old_log_probs=batch.require_old_log_probs()[:, :keep])

    def step_parameters(self) -> Params:
        """The tensors the TRPO step moves, by name: θ (Meta-SGD adds its rates)."""
        return dict(self.policy.named_parameters())

    def update(self, batch: SampledBatch) -> dict[str, float]:
        """TRPO step on θ from the sampled meta-batch (θ unchanged if no step is accepted)."""
        try:
            return self._trpo_update(self.step_parameters(), batch.adaptation, batch)
        finally:
            self._kl_cache = None  # not to hold the batch through the next sampling

    def refused(self) -> dict[str, float]:
        refused = {"train/surrogate_before": math.nan, "train/loss_before": math.nan, "train/non_finite": 1.0}
        return _unchanged(refused, 0)

    def _trpo_update(self, params: Params, adaptation: Adaptation, batch: SampledBatch) -> dict[str, float]:
        adapted = {name: p.detach().requires_grad_() for name, p in adaptation.params.items()}
        with record_function("outer/gradient"):
            # the KL at θ itself is zero: only the loss is needed here
            before = self._loss_parts(params, adapted, batch)
            grad = distributed.all_reduce_sum(self._gradient(before["loss"], params, adapted, adaptation))
        # "loss" and "train/surrogate" as train/loss_before and train/surrogate_before, the others as named
        names = {"loss": "train/loss_before", "train/surrogate": "train/surrogate_before"}
        values = _summed(*before.values())
        metrics = {names.get(key, key): value for key, value in zip(before, values)}
        loss_before = metrics["train/loss_before"]
        with record_function("outer/conjugate_gradient"):
            step = natural_step(grad, self._fisher_product(params, adaptation, batch), self.max_kl, self.cg_iters)
        # a non-finite loss (e.g. a regularizer's NaN) is refused like a non-finite gradient
        ok = finite(grad, step) and math.isfinite(loss_before)
        metrics["train/non_finite"] = float(not ok)
        attempts = self.ls_max_steps if ok else 0

        current = detach(params)
        direction = unflatten(step, current)
        size = 1.0
        for attempt in range(1, attempts + 1):
            with record_function("outer/line_search"):
                candidate = {n: (current[n] - size * direction[n]).requires_grad_() for n in current}
                adapted = self.adapt(candidate, batch.train, first_order=True).params
                with torch.no_grad():
                    after = self.objective(candidate, adapted, batch)
                loss_after, surrogate_after, kl = _summed(after.loss, after.parts["train/surrogate"], after.kl)
            improvement = loss_before - loss_after
            if np.isfinite(improvement) and np.isfinite(kl) and improvement > 0 and kl < self.max_kl:
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(candidate[name])
                return {
                    **metrics,
                    "train/line_search_accepted": 1.0,
                    "train/line_search_steps": float(attempt),
                    "train/step_size": size,
                    "train/kl": kl,
                    "train/surrogate_after": surrogate_after,
                    "train/loss_after": loss_after,
                    "train/improvement": improvement,
                    "train/expected_improvement": size * (grad @ step).item(),
                }
            size *= self.ls_backtrack_ratio
        return _unchanged(metrics, attempts)


def _kl_weights(batch: SampledBatch) -> torch.Tensor:
    """Each validation step's weight in the mean KL: its task's mean over steps, this rank's share of the
    mean over tasks. The Fisher products are the Hessian of the KL with these same weights."""
    return step_weights(batch.require_valid().mask) / batch.total_tasks


def _summed(*scalars: torch.Tensor) -> list[float]:
    """Scalar tensors summed over ranks, as floats (one device sync)."""
    return distributed.all_reduce_sum(torch.stack(scalars).detach()).tolist()


def _unchanged(metrics: dict[str, float], attempts: int) -> dict[str, float]:
    """Metrics of an iteration that leaves θ as it was (no step accepted, or a non-finite one refused)."""
    return {
        **metrics,
        "train/line_search_accepted": 0.0,
        "train/line_search_steps": float(attempts),
        "train/step_size": 0.0,
        "train/kl": 0.0,
        "train/surrogate_after": metrics["train/surrogate_before"],
        "train/loss_after": metrics["train/loss_before"],
        "train/improvement": 0.0,
        "train/expected_improvement": 0.0,
    }
