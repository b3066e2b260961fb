"""Hessian-vector products for MAML-TRPO's step: closed form for the built-in Gaussian MLP, autograd otherwise.

Each product maps a direction stacked per task (a dict name -> [T, ...]) to the product of each
task's Hessian with its slice. `metarl.policies.closed_form` has the closed forms; any other policy
(a plugin's, a categorical one) gets the autograd products, which tests check give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metarl.policies import closed_form
from metarl.policies.batched import Params, policy_kl

HessianProduct = Callable[[Params], Params]


def autograd_hessian(point: Params, grads: Params) -> HessianProduct:
    """v ↦ ∇²f v at `point`, from `grads` = ∇f(point) computed with `create_graph=True`."""

    def product(v: Params) -> Params:
        hv = torch.autograd.grad(
            list(grads.values()),
            list(point.values()),
            [v[name] for name in grads],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return dict(zip(point, hv))

    return product


def fisher_product(
    policy: nn.Module, params: Params, observations: torch.Tensor, weights: torch.Tensor
) -> HessianProduct:
    """v ↦ ∇²_q Σ weights·KL(π_params ‖ π_q) v at q = `params`: each task's weighted Fisher matrix.

    `weights` is shaped like `observations` without its last dim (e.g. `step_weights(mask)`).
    """
    if closed_form.supports(policy):
        return closed_form.FisherProduct(policy, params, observations, weights)
    at = {name: p.detach().requires_grad_() for name, p in params.items()}
    kl = (policy_kl(policy, params, at, observations) * weights).sum()
    return autograd_hessian(at, dict(zip(at, torch.autograd.grad(kl, list(at.values()), create_graph=True))))


def policy_gradient_hessian(
    policy: nn.Module,
    params: Params,
    observations: torch.Tensor,
    actions: torch.Tensor,
    weights: torch.Tensor,
    grads: Params | None,
    likelihood_ratio: bool = False,
) -> HessianProduct:
    """v ↦ ∇²Lᵢ v at `params` for a weighted policy-gradient loss Lᵢ = −Σ weights·log π(a|s) of each task
    (MAML's inner loss with weights = advantage × `step_weights(mask)`), or with `likelihood_ratio`
    for Lᵢ = −Σ w·π/π_o (ProMP's LVC loss; `weights` = w·π/π_o at `params`).

    `grads` (∇Lᵢ with graph) serve the autograd product; None is allowed only for the closed form.
    """
    if closed_form.supports(policy):
        return closed_form.PolicyGradientHessian(policy, params, observations, actions, weights, likelihood_ratio)
    if grads is None:
        raise ValueError("the autograd Hessian product needs the inner gradient computed with create_graph=True")
    return autograd_hessian(params, grads)
