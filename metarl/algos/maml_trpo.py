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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarl.algos.adaptation import Adaptation, adapt
from metarl.algos.advantages import compute_advantages
from metarl.algos.trpo import fisher_vector_product, flatten, natural_step, unflatten
from metarl.config import Config
from metarl.errors import PluginError
from metarl.policies.batched import Params, detach, log_probs, policy_kl, stack, unstack
from metarl.regularizers.base import Regularizer, RegularizerContext
from metarl.sampling.episodes import Episodes, masked_mean
from metarl.sampling.sampler import sample_episodes
from metarl.sampling.vector_env import make_vector_env
from metarl.tasks import TaskDistribution


@dataclass
class OuterObjective:
    """The outer objective at one θ: total loss, its parts, and the mean KL to the sampling policies."""

    loss: torch.Tensor
    surrogate: torch.Tensor
    kl: torch.Tensor
    penalties: dict[str, torch.Tensor]


@dataclass
class MetaBatch:
    """Everything the outer step needs from the sampled meta-batch."""

    train: Episodes
    valid: Episodes
    old_adapted: Params  # θᵢ' the validation episodes were sampled with
    old_log_probs: torch.Tensor


class MAMLTRPO:
    """Meta-learner: `step(rng)` runs one meta-iteration and returns its metrics."""

    def __init__(
        self,
        policy: nn.Module,
        family: TaskDistribution,
        config: Config,
        regularizers: dict[str, tuple[Regularizer, float]] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.policy = policy
        self.family = family
        self.config = config
        self.regularizers = regularizers or {}
        self.device = torch.device(device)
        self.horizon = config.horizon or family.max_episode_steps

    def _adapt(self, params: Params, train: Episodes, first_order: bool) -> Adaptation:
        c = self.config
        return adapt(self.policy, params, train, c.inner_lr, c.num_inner_steps, first_order)

    def _episodes(self, params: Params, env, seed: int) -> Episodes:
        episodes = sample_episodes(self.policy, params, env, self.horizon, seed)
        c = self.config
        return episodes.with_advantages(compute_advantages(episodes, c.gamma, c.gae_lambda, c.normalize_advantages))

    def objective(self, params: Params, adapted: Params, batch: MetaBatch) -> OuterObjective:
        """Surrogate on validation episodes at the adapted parameters, plus weighted regularizers."""
        valid = batch.valid
        ratio = torch.exp(log_probs(self.policy, adapted, valid.observations, valid.actions) - batch.old_log_probs)
        surrogate = -masked_mean(ratio * valid.advantages, valid.mask).mean()
        kl = self._mean_kl(adapted, batch)
        penalties: dict[str, torch.Tensor] = {}
        loss = surrogate
        if self.regularizers:
            ctx = RegularizerContext(self.policy, params, unstack(adapted), batch.train.tasks(), valid.tasks())
            for name, (regularizer, weight) in self.regularizers.items():
                penalties[name] = regularizer(ctx)
                if not (isinstance(penalties[name], torch.Tensor) and penalties[name].dim() == 0):
                    raise PluginError(f"regularizer {name!r} returned {penalties[name]!r}, not a scalar tensor")
                loss = loss + weight * penalties[name]
        return OuterObjective(loss, surrogate, kl, penalties)

    def _mean_kl(self, adapted: Params, batch: MetaBatch) -> torch.Tensor:
        """Mean over tasks of the KL from the sampling policies to the policies at `adapted`."""
        kl = policy_kl(self.policy, batch.old_adapted, adapted, batch.valid.observations)
        return masked_mean(kl, batch.valid.mask).mean()

    def _fisher_product(
        self, params: Params, adaptation: Adaptation, batch: MetaBatch
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ (∇²θ KL + damping·I) v, computed as Σᵢ Jᵢᵀ Fᵢ Jᵢ v + damping·v.

        Fᵢ is the KL's Hessian at θᵢ', taken w.r.t. θᵢ' directly. The chain rule's other term,
        ∇θᵢ' KL · ∇²θ θᵢ', vanishes because the KL is minimal (zero) at θ. This replaces a
        third-order backward through the inner step by second-order ones.
        """
        at = {name: p.detach().requires_grad_() for name, p in batch.old_adapted.items()}
        fisher = fisher_vector_product(self._mean_kl(at, batch), list(at.values()), 0.0)

        def product(v: torch.Tensor) -> torch.Tensor:
            pushed = flatten(list(adaptation.jvp(unflatten(v, params)).values()))
            pulled = adaptation.vjp(unflatten(fisher(pushed), at))
            return flatten(list(pulled.values())) + self.config.cg_damping * v

        return product

    def step(self, rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration; θ (the policy's parameters) is updated in place if a step is accepted."""
        c = self.config
        start = time.perf_counter()
        tasks = self.family.sample_tasks(c.meta_batch_size, rng)
        train_seed, valid_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        env = make_vector_env(self.family, tasks, c.fast_batch_size, self.device)
        params = dict(self.policy.named_parameters())
        valid = None
        try:
            train = self._episodes(stack(detach(params), len(tasks)), env, train_seed)
            sampled = time.perf_counter()
            adaptation = self._adapt(params, train, c.first_order)
            adapted_at = time.perf_counter()
            # NaN rewards or an exploding inner step would make the validation rollout itself fail
            if _finite(train.rewards, train.advantages, *adaptation.params.values()):
                valid = self._episodes(detach(adaptation.params), env, valid_seed)
        finally:
            env.close()
        sampled_valid = time.perf_counter()

        if valid is not None and _finite(valid.rewards, valid.advantages):
            old = detach(adaptation.params)
            batch = MetaBatch(train, valid, old, log_probs(self.policy, old, valid.observations, valid.actions))
            metrics = self._trpo_update(params, adaptation, batch)
        else:
            refused = {"train/surrogate_before": math.nan, "train/loss_before": math.nan, "train/non_finite": 1.0}
            metrics = _unchanged(refused, 0)
        end = time.perf_counter()
        env_steps = train.num_steps + (valid.num_steps if valid is not None else 0)
        metrics.update(
            {
                "return/before_adaptation": train.episode_returns().mean().item(),
                "return/after_adaptation": valid.episode_returns().mean().item() if valid is not None else math.nan,
                "perf/env_steps": float(env_steps),
                "perf/env_steps_per_s": env_steps / (end - start),
                "perf/sampling_s": (sampled - start) + (sampled_valid - adapted_at),
                "perf/adaptation_s": adapted_at - sampled,
                "perf/outer_step_s": end - sampled_valid,
                "perf/iteration_s": end - start,
            }
        )
        return metrics

    def _trpo_update(self, params: Params, adaptation: Adaptation, batch: MetaBatch) -> dict[str, float]:
        c = self.config
        before = self.objective(params, adaptation.params, batch)
        theta = list(params.values())
        grad = flatten(torch.autograd.grad(before.loss, theta, retain_graph=True))
        metrics = {
            "train/surrogate_before": before.surrogate.item(),
            "train/loss_before": before.loss.item(),
            **{f"regularizer/{name}": value.item() for name, value in before.penalties.items()},
        }
        step = natural_step(grad, self._fisher_product(params, adaptation, batch), c.max_kl, c.cg_iters)
        finite = _finite(grad, step)
        metrics["train/non_finite"] = float(not finite)
        attempts = c.ls_max_steps if finite else 0

        current = detach(params)
        direction = unflatten(step, current)
        size = 1.0
        for attempt in range(1, attempts + 1):
            candidate = {n: (current[n] - size * direction[n]).requires_grad_() for n in current}
            adapted = self._adapt(candidate, batch.train, first_order=True).params
            with torch.no_grad():
                after = self.objective(candidate, adapted, batch)
            improvement = before.loss.item() - after.loss.item()
            kl = after.kl.item()
            if np.isfinite(improvement) and np.isfinite(kl) and improvement > 0 and kl < c.max_kl:
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(candidate[name])
                return {
                    **metrics,
                    "train/line_search_accepted": 1.0,
                    "train/line_search_steps": float(attempt),
                    "train/step_size": size,
                    "train/kl": kl,
                    "train/surrogate_after": after.surrogate.item(),
                    "train/loss_after": after.loss.item(),
                    "train/improvement": improvement,
                    "train/expected_improvement": size * (grad @ step).item(),
                }
            size *= c.ls_backtrack_ratio
        return _unchanged(metrics, attempts)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


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
