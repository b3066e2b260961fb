"""The inner step: batched (vmap) equals a per-task loop, and its gradients match finite differences."""

import torch
from conftest import small_batch
from torch.func import functional_call

from metarl.algos.adaptation import adapt
from metarl.policies.batched import log_probs, unstack
from metarl.sampling.episodes import masked_mean

LR = 0.3


def _outer_loss(policy, adapted, episodes):
    """A scalar depending on every task's adapted parameters (the validation surrogate's shape)."""
    logp = log_probs(policy, adapted, episodes.observations, episodes.actions)
    return -masked_mean(logp * episodes.advantages.flip(-1), episodes.mask).mean()


def _loop_adapt(policy, params, episodes, steps):
    """Per-task adaptation with plain calls and autograd, one task at a time."""
    per_task = []
    for i in range(len(episodes)):
        ep = episodes[i]
        theta = dict(params)
        for _ in range(steps):
            pi = functional_call(policy, theta, (ep.observations,))
            loss = -((pi.log_prob(ep.actions) * ep.advantages * ep.mask).sum() / ep.mask.sum())
            grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
            theta = {n: p - LR * g for (n, p), g in zip(theta.items(), grads)}
        per_task.append(theta)
    return per_task


def test_vmapped_adaptation_equals_per_task_loop():
    policy, _, _, episodes = small_batch()
    params = dict(policy.named_parameters())
    for steps in (1, 2):
        batched = unstack(adapt(policy, params, episodes, LR, steps, first_order=False).params)
        looped = _loop_adapt(policy, params, episodes, steps)
        for b, lp in zip(batched, looped):
            for name in params:
                assert torch.allclose(b[name], lp[name], atol=1e-10), name


def test_second_order_gradient_equals_per_task_loop():
    policy, _, _, episodes = small_batch()
    params = dict(policy.named_parameters())
    batched = adapt(policy, params, episodes, LR, 1, first_order=False).params
    g_batched = torch.autograd.grad(_outer_loss(policy, batched, episodes), list(params.values()))
    looped = _loop_adapt(policy, params, episodes, 1)
    stacked = {n: torch.stack([t[n] for t in looped]) for n in params}
    g_loop = torch.autograd.grad(_outer_loss(policy, stacked, episodes), list(params.values()))
    for a, b in zip(g_batched, g_loop):
        assert torch.allclose(a, b, atol=1e-10)


def _directional_fd(fn, params, direction, eps=1e-6):
    plus = {n: p + eps * direction[n] for n, p in params.items()}
    minus = {n: p - eps * direction[n] for n, p in params.items()}
    return (fn(plus) - fn(minus)) / (2 * eps)


def test_gradient_through_inner_step_matches_finite_differences():
    policy, _, _, episodes = small_batch()
    params = {n: p.detach().clone().requires_grad_() for n, p in policy.named_parameters()}

    def objective(theta):
        return _outer_loss(policy, adapt(policy, theta, episodes, LR, 1, first_order=False).params, episodes)

    grads = dict(zip(params, torch.autograd.grad(objective(params), list(params.values()))))
    torch.manual_seed(3)
    for _ in range(3):
        direction = {n: torch.randn_like(p) for n, p in params.items()}
        analytic = sum((grads[n] * direction[n]).sum() for n in params)
        numeric = _directional_fd(lambda t: objective(t).detach(), params, direction)
        assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-8), (analytic, numeric)


def test_first_order_drops_the_hessian_term():
    policy, _, _, episodes = small_batch()
    params = dict(policy.named_parameters())
    first = adapt(policy, params, episodes, LR, 1, first_order=True).params
    second = adapt(policy, params, episodes, LR, 1, first_order=False).params
    for name in params:  # same adapted values ...
        assert torch.allclose(first[name], second[name])
    g_first = torch.autograd.grad(_outer_loss(policy, first, episodes), list(params.values()))
    g_second = torch.autograd.grad(_outer_loss(policy, second, episodes), list(params.values()))
    # ... but first order backpropagates only through the identity part of θ' = θ − α∇L
    adapted_leaf = {n: p.detach().requires_grad_() for n, p in first.items()}
    g_at_adapted = torch.autograd.grad(_outer_loss(policy, adapted_leaf, episodes), list(adapted_leaf.values()))
    for a, b in zip(g_first, g_at_adapted):
        assert torch.allclose(a, b.sum(0), atol=1e-10)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(g_first, g_second))
