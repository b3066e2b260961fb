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
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarl import distributed
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
    """The outer objective at one θ: total loss, its parts, and the mean KL to the sampling policies.

    Each value is this rank's share (its tasks' terms over the meta-batch size): summed over ranks,
    the meta-batch's value. In a single process, the value itself.
    """

    loss: torch.Tensor
    surrogate: torch.Tensor
    kl: torch.Tensor
    penalties: dict[str, torch.Tensor]


@dataclass
class MetaBatch:
    """Everything the outer step needs from the sampled meta-batch (this rank's tasks of it)."""

    train: Episodes
    valid: Episodes
    old_adapted: Params  # θᵢ' the validation episodes were sampled with
    old_log_probs: torch.Tensor
    total_tasks: int | None = None  # tasks on all ranks together; None: counted (a collective)

    def __post_init__(self) -> None:
        if self.total_tasks is None:
            self.total_tasks = int(distributed.sum_over_ranks([len(self.train)])[0])


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
        """Surrogate on validation episodes at the adapted parameters, plus weighted regularizers.

        A regularizer sees this rank's tasks only and counts with this rank's share of the tasks:
        exact for a mean over tasks of per-task terms, or a term of θ alone. A term that couples
        tasks (`consistency` compares each task with the others' states) sees only this rank's.
        """
        valid = batch.valid
        ratio = torch.exp(log_probs(self.policy, adapted, valid.observations, valid.actions) - batch.old_log_probs)
        surrogate = -masked_mean(ratio * valid.advantages, valid.mask).sum() / batch.total_tasks
        kl = self._mean_kl(adapted, batch)
        share = len(valid) / batch.total_tasks
        penalties: dict[str, torch.Tensor] = {}
        loss = surrogate
        if self.regularizers:
            ctx = RegularizerContext(self.policy, params, unstack(adapted), batch.train.tasks(), valid.tasks())
            for name, (regularizer, weight) in self.regularizers.items():
                value = regularizer(ctx)
                if not (isinstance(value, torch.Tensor) and value.dim() == 0):
                    raise PluginError(f"regularizer {name!r} returned {value!r}, not a scalar tensor")
                penalties[name] = share * value
                loss = loss + weight * penalties[name]
        return OuterObjective(loss, surrogate, kl, penalties)

    def _mean_kl(self, adapted: Params, batch: MetaBatch) -> torch.Tensor:
        """Mean over tasks of the KL from the sampling policies to the policies at `adapted` (this rank's share)."""
        kl = policy_kl(self.policy, batch.old_adapted, adapted, batch.valid.observations)
        return masked_mean(kl, batch.valid.mask).sum() / batch.total_tasks

    def _fisher_product(
        self, params: Params, adaptation: Adaptation, batch: MetaBatch
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """v ↦ (∇²θ KL + damping·I) v, computed as Σᵢ Jᵢᵀ Fᵢ Jᵢ v + damping·v, the sum over all ranks' tasks.

        Fᵢ is the KL's Hessian at θᵢ', taken w.r.t. θᵢ' directly. The chain rule's other term,
        ∇θᵢ' KL · ∇²θ θᵢ', vanishes because the KL is minimal (zero) at θ. This replaces a
        third-order backward through the inner step by second-order ones.
        """
        at = {name: p.detach().requires_grad_() for name, p in batch.old_adapted.items()}
        fisher = fisher_vector_product(self._mean_kl(at, batch), list(at.values()), 0.0)

        def product(v: torch.Tensor) -> torch.Tensor:
            pushed = flatten(list(adaptation.jvp(unflatten(v, params)).values()))
            pulled = adaptation.vjp(unflatten(fisher(pushed), at))
            return distributed.all_reduce_sum(flatten(list(pulled.values()))) + self.config.cg_damping * v

        return product

    def step(self, rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration; θ (the policy's parameters) is updated in place if a step is accepted.

        Every rank draws the same tasks and seeds from `rng` and samples and adapts its own slice of
        the tasks; returns and env steps are logged for the whole meta-batch.
        """
        c = self.config
        start = time.perf_counter()
        tasks = self.family.sample_tasks(c.meta_batch_size, rng)
        train_seed, valid_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        part = distributed.shard(len(tasks))
        own = tasks[part]
        # env k of the meta-batch resets with seed + k on whichever rank steps it
        offset = part.start * c.fast_batch_size
        env = make_vector_env(self.family, own, c.fast_batch_size, self.device)
        params = dict(self.policy.named_parameters())
        valid = None
        try:
            train = self._episodes(stack(detach(params), len(own)), env, train_seed + offset)
            sampled = time.perf_counter()
            adaptation = self._adapt(params, train, c.first_order)
            adapted_at = time.perf_counter()
            # NaN rewards or an exploding inner step would make the validation rollout itself fail
            if _finite(train.rewards, train.advantages, *adaptation.params.values()):
                valid = self._episodes(detach(adaptation.params), env, valid_seed + offset)
        finally:
            env.close()
        sampled_valid = time.perf_counter()

        if distributed.all_ranks(valid is not None and _finite(valid.rewards, valid.advantages)):
            old = detach(adaptation.params)
            logp = log_probs(self.policy, old, valid.observations, valid.actions)
            metrics = self._trpo_update(params, adaptation, MetaBatch(train, valid, old, logp, len(tasks)))
        else:
            refused = {"train/surrogate_before": math.nan, "train/loss_before": math.nan, "train/non_finite": 1.0}
            metrics = _unchanged(refused, 0)
        end = time.perf_counter()
        returns_before = train.episode_returns()
        returns_after = valid.episode_returns().sum().item() if valid is not None else math.nan
        before, after, episodes, env_steps = distributed.sum_over_ranks(
            [
                returns_before.sum().item(),
                returns_after,
                float(returns_before.numel()),
                float(train.num_steps + (valid.num_steps if valid is not None else 0)),
            ]
        )
        metrics.update(
            {
                "return/before_adaptation": before / episodes,
                "return/after_adaptation": after / episodes,
                "perf/env_steps": env_steps,
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
        grad = distributed.all_reduce_sum(flatten(torch.autograd.grad(before.loss, theta, retain_graph=True)))
        loss_before, surrogate_before, *penalties = _summed(before.loss, before.surrogate, *before.penalties.values())
        metrics = {
            "train/surrogate_before": surrogate_before,
            "train/loss_before": loss_before,
            **{f"regularizer/{name}": value for name, value in zip(before.penalties, penalties)},
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
            loss_after, surrogate_after, kl = _summed(after.loss, after.surrogate, after.kl)
            improvement = loss_before - loss_after
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
                    "train/surrogate_after": surrogate_after,
                    "train/loss_after": loss_after,
                    "train/improvement": improvement,
                    "train/expected_improvement": size * (grad @ step).item(),
                }
            size *= c.ls_backtrack_ratio
        return _unchanged(metrics, attempts)


def _summed(*scalars: torch.Tensor) -> list[float]:
    """Scalar tensors summed over ranks, as floats (one device sync)."""
    return distributed.all_reduce_sum(torch.stack(scalars).detach()).tolist()


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
