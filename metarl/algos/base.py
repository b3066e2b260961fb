"""What every meta-learner shares: sampling the meta-batch, adapting, regularizers, metrics.

`MetaLearner.step(rng)` runs one meta-iteration: sample tasks, roll out train episodes with θ, GAE
advantages, inner step(s), validation episodes with each θᵢ', then `update` (the learner's own outer
step), and returns the metrics the trainer logs. `GradientMetaLearner` is the outer step by Adam on the
MAML objective; the learners in this package override `adapt`, `outer_loss` or `meta_parameters`.

Across processes (`metarl.distributed`), every rank draws the same tasks and takes its own slice;
per-task terms enter losses as their sum over this rank's tasks divided by the meta-batch size, and
gradients are summed over ranks, so an update equals the single-process one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.profiler import record_function

from metarl import distributed, metrics
from metarl.algos.adaptation import Adaptation, adapt, inner_losses, sampling_log_probs
from metarl.algos.held_out import AdaptationResult, evaluate_adaptation
from metarl.algos.trpo import flatten
from metarl.config import Config
from metarl.errors import PluginError
from metarl.hyperparameters import POSITIVE, Hyperparameter, configure, one_of
from metarl.policies.batched import Params, detach, log_probs, stack, unstack
from metarl.regularizers.base import Regularizer, RegularizerContext
from metarl.sampling.advantages import compute_advantages
from metarl.sampling.episodes import Episodes, masked_mean
from metarl.sampling.sampler import sample_episodes
from metarl.sampling.vector_env import make_vector_env
from metarl.sampling.workers import worker_pool
from metarl.tasks import TaskDistribution, VectorTaskEnv

VALIDATION_METRIC = metrics.VALIDATION_RETURN  # the name metarl 0.1.0 plugins import
_NOT_FINITE = "the batch has no {}: its train episodes or inner step were not finite"


@dataclass
class SampledBatch:
    """This rank's part of one sampled meta-batch, with the adaptation the validation episodes used:
    what every learner's outer step works on.

    `valid` (and the `old_*` fields) are None when the train episodes or the inner step were not
    finite (nothing to update on).
    """

    train: Episodes
    valid: Episodes | None
    adaptation: Adaptation
    total_tasks: int  # tasks on all ranks together
    sampling_s: float = 0.0
    adaptation_s: float = 0.0
    old_adapted: Params | None = None  # θᵢ' that sampled the validation episodes, detached
    old_log_probs: torch.Tensor | None = None  # their log-probabilities of the validation actions [T, E, H]

    @classmethod
    def of(
        cls,
        policy: nn.Module,
        train: Episodes,
        valid: Episodes | None,
        adaptation: Adaptation,
        total_tasks: int,
        sampling_s: float = 0.0,
        adaptation_s: float = 0.0,
    ) -> SampledBatch:
        """The batch, with the sampling policies' log-probabilities of the validation actions."""
        old_adapted = old_log_probs = None
        if valid is not None:
            old_adapted = detach(adaptation.params)
            with torch.no_grad():
                old_log_probs = log_probs(policy, old_adapted, valid.observations, valid.actions)
        return cls(train, valid, adaptation, total_tasks, sampling_s, adaptation_s, old_adapted, old_log_probs)

    def task_mean(self, per_task: torch.Tensor) -> torch.Tensor:
        """This rank's share of the mean over the meta-batch of a per-task value ([T] → scalar)."""
        return per_task.sum() / self.total_tasks

    # A batch reaches `update` only with its validation episodes; an outer step takes them from these.

    def require_valid(self) -> Episodes:
        """`valid` (raises ValueError if it is None)."""
        if self.valid is None:
            raise ValueError(_NOT_FINITE.format("validation episodes"))
        return self.valid

    def require_old_adapted(self) -> Params:
        """`old_adapted` (raises ValueError if it is None)."""
        if self.old_adapted is None:
            raise ValueError(_NOT_FINITE.format("adapted parameters"))
        return self.old_adapted

    def require_old_log_probs(self) -> torch.Tensor:
        """`old_log_probs` (raises ValueError if it is None)."""
        if self.old_log_probs is None:
            raise ValueError(_NOT_FINITE.format("validation log-probabilities"))
        return self.old_log_probs


def finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def policy_std(policy: nn.Module) -> float | None:
    """Mean standard deviation of a policy with a state-independent `log_std` (None for others)."""
    log_std = getattr(policy, "log_std", None)
    if not isinstance(log_std, torch.Tensor):
        return None
    return log_std.detach().clamp(min=getattr(policy, "min_log_std", -math.inf)).exp().mean().item()


class MetaLearner:
    """Base of `metarl.algorithms` plugins: `step(rng)` runs one meta-iteration and returns its metrics.

    Subclasses implement `update`; they may override `adapt` (the inner loop), `refused` (metrics of
    an iteration with non-finite values), `end_iteration` and the `state_dict` pair. A learner's own
    keys are `Hyperparameter`s declared on its class and given as constructor keywords (the config's
    `algo_kwargs`); the run-level keys (inner step, batch sizes, discount) are in `config`.
    """

    takes_declared_keys_only = True  # **hyperparameters holds only the declared keys
    inner_loss = Hyperparameter(
        "log-likelihood",
        one_of("log-likelihood", "lvc"),
        "inner-step objective: log-likelihood (MAML's policy gradient) or lvc (ProMP's low-variance curvature)",
    )

    def __init__(
        self,
        policy: nn.Module,
        family: TaskDistribution,
        config: Config,
        regularizers: dict[str, tuple[Regularizer, float]] | None = None,
        device: torch.device | str = "cpu",
        **hyperparameters: Any,
    ) -> None:
        configure(self, hyperparameters, f"algorithm {type(self).__name__}")
        self.policy = policy
        self.family = family
        self.config = config
        self.regularizers = regularizers or {}
        self.device = torch.device(device)
        self.horizon = config.horizon_for(family)
        self.sampling_params: Params = {}  # θ that sampled the current batch's train episodes (θo)
        #: id(episodes) -> (episodes, their log πθo): the current batch's, see `_lvc_log_probs`
        self._sampling_log_probs: dict[int, tuple[Episodes, torch.Tensor]] = {}
        #: processes that step the generic make_env path (None: in this process); see `close`
        self.workers = worker_pool(config.num_workers, config.worker_timeout)

    def inner_objective(self, adapted: Params, train: Episodes) -> torch.Tensor:
        """The inner loss per task ([T]) at stacked parameters `adapted`, as `inner_loss` says.

        The LVC ratio is taken to the policy that sampled `train` (`sampling_params`, θ itself when no
        batch was sampled), so re-adapting from another θ weighs the episodes by importance.
        """
        return inner_losses(self.policy, adapted, train, self._lvc_log_probs(train))

    def _lvc_log_probs(self, train: Episodes) -> torch.Tensor | None:
        """log πθo(a|s) of `train`'s actions for the LVC loss (None for the log-likelihood loss),
        computed once per episodes object of the current batch: every inner step, line-search step
        and Adam step of an iteration divides by the same values."""
        sampling = self._lvc_sampling()
        if sampling is None:
            return None
        cached = self._sampling_log_probs.get(id(train))
        if cached is not None and cached[0] is train:
            return cached[1]
        values = sampling_log_probs(self.policy, stack(sampling, len(train)), train)
        if self.sampling_params:  # θo of the batch; θ itself (no batch sampled) may move between calls
            self._sampling_log_probs[id(train)] = (train, values)
        return values

    def _lvc_sampling(self) -> Params | None:
        """θo for the LVC loss (θ itself when no batch was sampled), None for the log-likelihood loss."""
        if self.inner_loss != "lvc":
            return None
        return self.sampling_params or detach(dict(self.policy.named_parameters()))

    def adapt(self, params: Params, train: Episodes, first_order: bool) -> Adaptation:
        """The inner loop from θ = `params` for every task of `train` (MAML's policy-gradient step, or
        ProMP's LVC step with `inner_loss: lvc`)."""
        c = self.config
        return adapt(self.policy, params, train, c.inner_lr, c.num_inner_steps, first_order, self._lvc_log_probs(train))

    def episodes(self, params: Params, env: VectorTaskEnv, seed: int) -> Episodes:
        """Episodes with stacked `params`, with GAE advantages."""
        with record_function("sampling/rollout"):
            episodes = sample_episodes(self.policy, params, env, self.horizon, seed)
        c = self.config
        with record_function("sampling/advantages"):
            advantages = compute_advantages(episodes, c.gamma, c.gae_lambda, c.normalize_advantages)
        return episodes.with_advantages(advantages)

    def sample(self, rng: np.random.Generator) -> SampledBatch:
        """Tasks, train episodes with θ, the inner loop, validation episodes with each θᵢ'."""
        c = self.config
        start = time.perf_counter()
        tasks = self.family.sample_tasks(c.meta_batch_size, rng)
        train_seed, valid_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        part = distributed.shard(len(tasks))
        own = tasks[part]
        # env k of the meta-batch resets with seed + k on whichever rank steps it
        offset = part.start * c.fast_batch_size
        env = make_vector_env(self.family, own, c.fast_batch_size, self.device, self.workers)
        params: Params = dict(self.policy.named_parameters())
        self.sampling_params = {n: p.detach().clone() for n, p in params.items()}
        self._sampling_log_probs = {}
        valid = None
        try:
            train = self.episodes(stack(detach(params), len(own)), env, train_seed + offset)
            sampled = time.perf_counter()
            adaptation = self.adapt(params, train, c.first_order)
            adapted_at = time.perf_counter()
            # NaN rewards or an exploding inner step would make the validation rollout itself fail
            if finite(train.rewards, train.require_advantages(), *adaptation.params.values()):
                valid = self.episodes(detach(adaptation.params), env, valid_seed + offset)
        finally:
            env.close()
        end = time.perf_counter()
        sampling_s = (sampled - start) + (end - adapted_at)
        return SampledBatch.of(self.policy, train, valid, adaptation, len(tasks), sampling_s, adapted_at - sampled)

    def update(self, batch: SampledBatch) -> dict[str, float]:
        """The outer step on θ from a finite batch; returns metrics (`train/*`)."""
        raise NotImplementedError

    def refused(self) -> dict[str, float]:
        """Metrics of an iteration whose episodes or inner step were not finite (θ unchanged)."""
        return {metrics.NON_FINITE: 1.0}

    def step(self, rng: np.random.Generator) -> dict[str, float]:
        """One meta-iteration; θ (the policy's parameters) is updated in place."""
        start = time.perf_counter()
        batch = self.sample(rng)
        valid = batch.valid
        ok = distributed.all_ranks(valid is not None and finite(valid.rewards, valid.require_advantages()))
        result = self.update(batch) if ok else self.refused()
        end = time.perf_counter()
        returns_before = batch.train.episode_returns()
        sums = [
            returns_before.sum().item(),
            valid.episode_returns().sum().item() if valid is not None else math.nan,
            float(returns_before.numel()),
            float(batch.train.num_steps + (valid.num_steps if valid is not None else 0)),
        ]
        train_success = batch.train.success
        reports_success = train_success is not None
        if train_success is not None:
            sums += [
                train_success.sum().item(),
                valid.success.sum().item() if valid is not None and valid.success is not None else math.nan,
            ]
        before, after, episodes, env_steps, *successes = distributed.sum_over_ranks(sums)
        if reports_success:
            result[metrics.SUCCESS_BEFORE] = successes[0] / episodes
            result[metrics.SUCCESS_AFTER] = successes[1] / episodes
        std = policy_std(self.policy)
        if std is not None:
            result[metrics.POLICY_STD] = std
        timings = batch.sampling_s, batch.adaptation_s, end - start
        return {**result, **metrics.iteration_metrics(before / episodes, after / episodes, env_steps, *timings)}

    def surrogate(self, adapted: Params, batch: SampledBatch, old_log_probs: torch.Tensor) -> torch.Tensor:
        """Per-task likelihood ratios πθᵢ'/πθᵢ'_old on the validation episodes ([T, E, H])."""
        valid = batch.require_valid()
        return torch.exp(log_probs(self.policy, adapted, valid.observations, valid.actions) - old_log_probs)

    def outer_loss(
        self, params: Params, adaptation: Adaptation, batch: SampledBatch, old_log_probs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """MAML's outer objective, which the learners share: the surrogate mean(πθᵢ'/πθᵢ'_old · A) on
        the validation episodes at θᵢ'(θ) (`adaptation.params`), plus weighted regularizers. Returns the
        loss (key "loss") and its parts, each this rank's share."""
        ratio, valid = self.surrogate(adaptation.params, batch, old_log_probs), batch.require_valid()
        surrogate = -batch.task_mean(masked_mean(ratio * valid.require_advantages(), valid.mask))
        penalties = self.penalties(params, adaptation.params, batch.train, valid, batch.total_tasks)
        parts = {f"regularizer/{name}": value for name, value in penalties.items()}
        return {"loss": self.with_penalties(surrogate, penalties), "train/surrogate": surrogate, **parts}

    def penalties(
        self, params: Params, adapted: Params, train: Episodes, valid: Episodes, total_tasks: int
    ) -> dict[str, torch.Tensor]:
        """Each regularizer's value, as this rank's share (weights not applied).

        A regularizer sees this rank's tasks only: exact for a mean over tasks of per-task terms, or a
        term of θ alone. A term that couples tasks (`consistency`) sees only this rank's.
        """
        if not self.regularizers:
            return {}
        ctx = RegularizerContext(self.policy, params, unstack(adapted), train.tasks(), valid.tasks())
        share = len(train) / total_tasks
        values = {}
        for name, (regularizer, _) in self.regularizers.items():
            value = regularizer(ctx)
            if not (isinstance(value, torch.Tensor) and value.dim() == 0):
                raise PluginError(f"regularizer {name!r} returned {value!r}, not a scalar tensor")
            values[name] = share * value
        return values

    def with_penalties(self, loss: torch.Tensor, penalties: dict[str, torch.Tensor]) -> torch.Tensor:
        """`loss` + Σ βₖ Rₖ over the configured regularizers."""
        for name, value in penalties.items():
            loss = loss + self.regularizers[name][1] * value
        return loss

    @property
    def inner_lr(self) -> float | Params:
        """The inner step size used to adapt to a new task (a number, or one tensor per parameter)."""
        return self.config.inner_lr

    def evaluate(self, tasks: list[dict[str, Any]], steps: int, episodes: int, seed: int) -> AdaptationResult:
        """Returns on `tasks` after 0..`steps` adaptation steps (by default inner gradient steps with
        `inner_lr`, `episodes` episodes per step); learners that adapt otherwise override this."""
        return evaluate_adaptation(
            self.policy,
            self.family,
            self.config,
            tasks,
            steps,
            episodes,
            seed,
            self.device,
            self.inner_lr,
            self.workers,
        )

    def close(self) -> None:
        """Stop the sampler's worker processes (the next sampling starts them again)."""
        if self.workers is not None:
            self.workers.close()

    def end_iteration(self, metrics: dict[str, float]) -> None:
        """Called by the trainer with an iteration's metrics, validation included (when it ran)."""

    def state_dict(self) -> dict[str, Any]:
        """Learner state beyond the policy's parameters (optimizers, learned rates), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


# A mixin of learner behaviour (E-MAML's exploration term, Meta-SGD's rates) goes before a MetaLearner
# subclass in the bases; for the type checker it is one.
if TYPE_CHECKING:
    LearnerMixin = MetaLearner
else:
    LearnerMixin = object


class GradientMetaLearner(MetaLearner):
    """Outer step by Adam (`outer_lr`) on `outer_loss`, `outer_steps` times per sampled batch.

    The default outer loss is MAML's: the surrogate mean(πθᵢ'/πθᵢ'_old · A) on the validation episodes,
    at θᵢ'(θ) through the inner step, plus weighted regularizers. At the sampled θᵢ' its gradient is
    the policy gradient through adaptation. Each step after the first adapts again from the current θ.
    """

    outer_steps = 1
    outer_lr = Hyperparameter(1e-3, POSITIVE, "Adam learning rate of the outer step")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optimizer = torch.optim.Adam(self.meta_parameters(), lr=self.outer_lr)

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer step optimises."""
        return list(self.policy.parameters())

    def update(self, batch: SampledBatch) -> dict[str, float]:
        params: Params = dict(self.policy.named_parameters())
        variables = self.meta_parameters()
        old_log_probs = batch.require_old_log_probs()
        adaptation, first, taken = batch.adaptation, {}, self.outer_steps
        for step in range(self.outer_steps):
            if step:
                adaptation = self.adapt(params, batch.train, self.config.first_order)
            parts = self.outer_loss(params, adaptation, batch, old_log_probs)
            grads = torch.autograd.grad(parts["loss"], variables)
            flat = distributed.all_reduce_sum(flatten(grads))
            if step == 0:
                names = list(parts)
                values = distributed.all_reduce_sum(torch.stack([parts[n].detach() for n in names])).tolist()
                first = {("train/loss_before" if n == "loss" else n): v for n, v in zip(names, values)}
                first["train/grad_norm"] = flat.norm().item()
            # a non-finite loss (e.g. a regularizer's NaN) is refused like a non-finite gradient
            if not (finite(flat) and distributed.all_ranks(finite(parts["loss"].detach()))):
                return {**first, metrics.NON_FINITE: 1.0, "train/outer_steps_taken": float(step)}
            for p, g in zip(variables, torch.split(flat, [v.numel() for v in variables])):
                p.grad = g.view_as(p)
            if not self.take_outer_step(batch):
                taken = step
                break
            self.after_outer_step(parts)
        return {
            **first,
            metrics.NON_FINITE: 0.0,
            "train/outer_steps_taken": float(taken),
            "train/outer_lr": self.optimizer.param_groups[0]["lr"],
        }

    def take_outer_step(self, batch: SampledBatch) -> bool:
        """One Adam step on the gradients in place; False when the step was undone, which ends the
        batch's outer steps (ProMP's `max_inner_kl`)."""
        self.optimizer.step()
        return True

    def after_outer_step(self, parts: dict[str, torch.Tensor]) -> None:
        """Hook after each Adam step, with the loss parts that step used."""

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
