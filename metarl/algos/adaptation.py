"""The inner loop: θᵢ' = θ − α ∇θ Lᵢ(θ) for every task of the meta-batch at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from metarl.algos.curvature import HessianProduct, autograd_hessian, policy_gradient_hessian
from metarl.policies.batched import Params, detach, log_probs, stack
from metarl.sampling.episodes import Episodes, masked_mean, step_weights


def policy_gradient_loss(policy: nn.Module, params: Params, episodes: Episodes) -> torch.Tensor:
    """REINFORCE loss −mean(log π(a|s)·A) of each task with its own stacked parameters; shape [T]."""
    logp = log_probs(policy, params, episodes.observations, episodes.actions)
    return -masked_mean(logp * episodes.require_advantages(), episodes.mask)


def sampling_log_probs(policy: nn.Module, sampling: Params, episodes: Episodes) -> torch.Tensor:
    """log π_o(a|s) of the episodes' actions ([T, E, H]), π_o the policy with the (stacked) `sampling`
    parameters that sampled them: the constant denominator of the LVC loss."""
    with torch.no_grad():
        return log_probs(policy, sampling, episodes.observations, episodes.actions)


def likelihood_ratios(
    policy: nn.Module, params: Params, episodes: Episodes, old_log_probs: torch.Tensor
) -> torch.Tensor:
    """π(a|s)/π_o(a|s) per step ([T, E, H]), `old_log_probs` = log π_o(a|s) (`sampling_log_probs`)."""
    return torch.exp(log_probs(policy, params, episodes.observations, episodes.actions) - old_log_probs)


def inner_losses(
    policy: nn.Module, params: Params, episodes: Episodes, old_log_probs: torch.Tensor | None
) -> torch.Tensor:
    """The inner loss per task ([T]): MAML's −mean(log π(a|s)·A), or with `old_log_probs` (those of
    the policy π_o that sampled the episodes) ProMP's low-variance-curvature loss −mean(π/π_o·A).

    At π = π_o the LVC gradient is the policy gradient; its Hessian is E[(∇²log π + ∇log π
    ∇log πᵀ)·A] per step, without the cross-step terms of the DiCE/MAML estimator (Rothfuss et al. 2019).
    """
    if old_log_probs is None:
        return policy_gradient_loss(policy, params, episodes)
    ratio = likelihood_ratios(policy, params, episodes, old_log_probs)
    return -masked_mean(ratio * episodes.require_advantages(), episodes.mask)


@dataclass
class Adaptation:
    """Adapted parameters stacked per task, with what is needed to multiply by Jᵢ = dθᵢ'/dθ.

    `hessians` holds, for each second-order inner step, the product with the inner loss's Hessian at
    that step's iterate; it is empty for first-order adaptation, where Jᵢ is the identity. Each step's
    Jacobian I − α∇²L is symmetric, so products with Jᵢ and Jᵢᵀ differ only in the order of steps.
    """

    params: Params
    hessians: list[HessianProduct]
    lr: float

    def _through(self, vectors: Params, hessians: Iterable[HessianProduct]) -> Params:
        for hessian in hessians:
            hv = hessian(vectors)
            vectors = {name: v - self.lr * hv[name] for name, v in vectors.items()}
        return vectors

    def jvp(self, v: Params) -> Params:
        """Jᵢ v for every task: v shaped like θ, the result stacked per task."""
        return self._through(stack(v, len(next(iter(self.params.values())))), self.hessians)

    def vjp(self, u: Params) -> Params:
        """Σᵢ Jᵢᵀ uᵢ: u stacked per task, the result shaped like θ."""
        return {name: t.sum(0) for name, t in self._through(u, reversed(self.hessians)).items()}


def adapt(
    policy: nn.Module,
    params: Params,
    episodes: Episodes,
    lr: float,
    num_steps: int,
    first_order: bool,
    old_log_probs: torch.Tensor | None = None,
) -> Adaptation:
    """The inner loop for all tasks at once from shared θ = `params`, differentiable w.r.t. it
    (first order: only through the identity part of θ' = θ − α∇L); with `old_log_probs` (those of the
    policy that sampled `episodes`, `sampling_log_probs`) on ProMP's LVC loss."""
    return adapt_stacked(policy, stack(params, len(episodes)), episodes, lr, num_steps, first_order, old_log_probs)


def inner_loop(
    stacked: Params,
    loss: Callable[[Params], torch.Tensor],
    lr: float | Params,
    num_steps: int,
    first_order: bool,
    hessian: Callable[[Params, Params], HessianProduct] = autograd_hessian,
) -> tuple[Params, list[HessianProduct], list[Params]]:
    """θ' = θ − lr·∇L, `num_steps` times, for all tasks at once with a per-task loss ([T]).

    `lr` is a number or one tensor per parameter (broadcast over tasks). Returns θ'; unless first
    order, each step's Hessian product, `hessian(iterate, gradient with graph)` (what `Adaptation` needs);
    and each step's gradient, detached (what a product with dθ'/d lr needs).
    """
    adapted, hessians, steps = stacked, [], []
    for _ in range(num_steps):
        gradients = torch.autograd.grad(loss(adapted).sum(), list(adapted.values()), create_graph=not first_order)
        grads = dict(zip(adapted, gradients))
        if not first_order:
            hessians.append(hessian(adapted, grads))
        steps.append(detach(grads))
        adapted = {name: p - (lr[name] if isinstance(lr, dict) else lr) * grads[name] for name, p in adapted.items()}
    return adapted, hessians, steps


def adapt_stacked(
    policy: nn.Module,
    stacked: Params,
    episodes: Episodes,
    lr: float,
    num_steps: int,
    first_order: bool,
    old_log_probs: torch.Tensor | None = None,
) -> Adaptation:
    """Policy-gradient inner steps from per-task parameters `stacked` (leading task dimension), on
    ProMP's LVC loss with `old_log_probs` (those of the policy that sampled `episodes`).

    The per-task losses are summed: task i's loss depends only on slice i of the stacked parameters,
    so one gradient of the sum holds every task's own gradient. The Hessian products are closed-form
    where `policy_gradient_hessian` has one for the policy.
    """
    loss = lambda p: inner_losses(policy, p, episodes, old_log_probs)  # noqa: E731
    weights = episodes.require_advantages() * step_weights(episodes.mask)
    lvc = old_log_probs is not None

    def hessian(iterate: Params, grads: Params) -> HessianProduct:
        coef = weights
        if old_log_probs is not None:
            with torch.no_grad():
                coef = weights * likelihood_ratios(policy, iterate, episodes, old_log_probs)
        return policy_gradient_hessian(policy, iterate, episodes.observations, episodes.actions, coef, grads, lvc)

    adapted, hessians, _ = inner_loop(stacked, loss, lr, num_steps, first_order, hessian)
    return Adaptation(adapted, hessians, lr)
