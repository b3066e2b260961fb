"""Policy calls with one parameter set per task, vectorised with `torch.func.vmap`.

Parameters are dicts name -> tensor with a leading task dimension; observations and actions are
shaped [T, ...]. A Distribution cannot leave `vmap`, so each helper computes its tensor inside.
For the built-in Gaussian MLP, `sample_actions`, `log_probs` and `policy_kl` take the same values
from `closed_form`, which skips vmap's and the Distribution's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, kl_divergence
from torch.func import functional_call, vmap

from metarl.policies import closed_form
from metarl.policies.closed_form import Params as Params  # re-exported: the algorithms take it from here


@contextmanager
def _no_validation() -> Iterator[None]:
    # Argument validation branches on tensor values, which vmap cannot trace.
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def stack(params: Params, num_tasks: int) -> Params:
    """The same parameters for `num_tasks` tasks (a view; gradients flow back to `params`)."""
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in params.items()}


def unstack(params: Params) -> list[Params]:
    """Stacked parameters as one dict per task."""
    num_tasks = next(iter(params.values())).shape[0]
    return [{name: p[i] for name, p in params.items()} for i in range(num_tasks)]


def detach(params: Params) -> Params:
    return {name: p.detach() for name, p in params.items()}


def _vmapped(fn: Callable[..., torch.Tensor], randomness: str = "error") -> Callable[..., torch.Tensor]:
    batched = vmap(fn, randomness=randomness)

    def call(*args: object) -> torch.Tensor:
        with _no_validation():
            return batched(*args)

    return call


def distribution(policy: nn.Module, params: Params, obs: torch.Tensor) -> Distribution:
    """The policy's distribution at `obs` with `params` (one task, no task dimension)."""
    dist: Distribution = functional_call(policy, params, (obs,))  # a policy's forward returns one
    return dist


def sample_actions(policy: nn.Module, params: Params, obs: torch.Tensor) -> torch.Tensor:
    """One action per observation, [T, B, ...], each task acting with its own parameters."""
    if closed_form.supports(policy):
        return closed_form.sample(policy, params, obs)
    return _vmapped(lambda p, o: distribution(policy, p, o).sample(), randomness="different")(params, obs)


def log_probs(policy: nn.Module, params: Params, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|s) for each task's parameters, shaped like `obs` without its last dim."""
    if closed_form.supports(policy):
        return closed_form.log_probs(policy, params, obs, actions)
    return _vmapped(lambda p, o, a: distribution(policy, p, o).log_prob(a))(params, obs, actions)


def policy_entropy(policy: nn.Module, params: Params, obs: torch.Tensor) -> torch.Tensor:
    """Entropy of π(·|s) for each task's parameters, shaped like `obs` without its last dim."""
    return _vmapped(lambda p, o: distribution(policy, p, o).entropy())(params, obs)


def _kl(p: Distribution, q: Distribution) -> torch.Tensor:
    if isinstance(p, Categorical) and isinstance(q, Categorical):
        # torch's rule writes through boolean masks, which vmap cannot batch
        return torch.where(p.probs > 0, p.probs * (p.logits - q.logits), 0.0).sum(-1)
    return kl_divergence(p, q)


def policy_kl_from(policy: nn.Module, params_p: Params, obs: torch.Tensor) -> Callable[[Params], torch.Tensor]:
    """q ↦ `policy_kl(policy, params_p, q, obs)`; for the built-in Gaussian MLP, π_p's forward pass
    is computed once for every q (the line search's KL to the sampling policies)."""
    if closed_form.supports(policy):
        return closed_form.KLFrom(policy, params_p, obs)
    return lambda params_q: policy_kl(policy, params_p, params_q, obs)


def policy_kl(policy: nn.Module, params_p: Params, params_q: Params, obs: torch.Tensor) -> torch.Tensor:
    """KL(π_p(·|s) ‖ π_q(·|s)) per observation, per task."""
    if closed_form.supports(policy):
        return closed_form.kl(policy, params_p, params_q, obs)
    return _vmapped(lambda p, q, o: _kl(distribution(policy, p, o), distribution(policy, q, o)))(
        params_p, params_q, obs
    )
