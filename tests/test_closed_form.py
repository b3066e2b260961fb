"""The closed-form Gaussian MLP (`metarl.policies.closed_form`) against per-task autograd through `Distribution`s."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence
from torch.func import functional_call

from metarl.algos.curvature import fisher_product, policy_gradient_hessian
from metarl.policies import CategoricalMLP, GaussianMLP, closed_form
from metarl.policies.batched import stack

TASKS = 3
OBS = gym.spaces.Box(-1.0, 1.0, (3,))
ACT = gym.spaces.Box(-1.0, 1.0, (2,))


class _Subclass(GaussianMLP):
    pass


def _policy(activation: str, hidden_sizes=(6, 5), min_std: float = 1e-6) -> GaussianMLP:
    torch.manual_seed(0)
    return GaussianMLP(OBS, ACT, hidden_sizes=hidden_sizes, activation=activation, min_std=min_std).double()


def _task_params(policy: GaussianMLP, seed: int) -> dict[str, torch.Tensor]:
    """Different parameters for each task, with log stds spread around the policy's."""
    generator = torch.Generator().manual_seed(seed)
    params = stack({n: p.detach() for n, p in policy.named_parameters()}, TASKS)
    return {n: p + 0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()}


def _task(params: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {n: p[i] for n, p in params.items()}


def _data(seed: int):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(TASKS, 4, 5, 3, generator=generator, dtype=torch.float64)
    actions = torch.randn(TASKS, 4, 5, 2, generator=generator, dtype=torch.float64)
    weights = torch.randn(TASKS, 4, 5, generator=generator, dtype=torch.float64)
    weights[:, ::2, -2:] = 0.0  # steps after an episode ended
    return obs, actions, weights


def test_supports_only_the_builtin_gaussian_mlp_with_tanh_or_relu():
    assert closed_form.supports(GaussianMLP(OBS, ACT, activation="tanh"))
    assert closed_form.supports(GaussianMLP(OBS, ACT, activation="relu"))
    assert closed_form.supports(GaussianMLP(OBS, ACT, hidden_sizes=[]))
    assert not closed_form.supports(GaussianMLP(OBS, ACT, activation="elu"))
    assert not closed_form.supports(_Subclass(OBS, ACT))
    assert not closed_form.supports(CategoricalMLP(OBS, gym.spaces.Discrete(3)))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("hidden_sizes", [(6, 5), (7,), ()])
def test_log_probs_and_kl_and_their_gradients_equal_the_distributions(activation, hidden_sizes):
    policy = _policy(activation, hidden_sizes, min_std=0.9)  # the clamp holds some log stds
    p, q = _task_params(policy, 1), _task_params(policy, 2)
    q = {n: t.requires_grad_() for n, t in q.items()}
    obs, actions, weights = _data(0)
    assert (q["log_std"] < math.log(0.9)).any() and (q["log_std"] > math.log(0.9)).any()

    logp = closed_form.log_probs(policy, q, obs, actions)
    kl = closed_form.kl(policy, p, q, obs)
    assert logp.shape == kl.shape == (TASKS, 4, 5)
    grads = torch.autograd.grad((weights * (logp + kl)).sum(), list(q.values()))
    for i in range(TASKS):
        qi = {n: t.detach().requires_grad_() for n, t in _task(q, i).items()}
        pi_p, pi_q = (functional_call(policy, params, (obs[i],)) for params in (_task(p, i), qi))
        expected_logp, expected_kl = pi_q.log_prob(actions[i]), kl_divergence(pi_p, pi_q)
        torch.testing.assert_close(logp[i], expected_logp)
        torch.testing.assert_close(kl[i], expected_kl)
        expected = torch.autograd.grad((weights[i] * (expected_logp + expected_kl)).sum(), list(qi.values()))
        for g, e in zip(grads, expected):
            torch.testing.assert_close(g[i], e)


def test_sampled_actions_have_the_policy_mean_and_std():
    policy = _policy("tanh")
    params = _task_params(policy, 3)
    obs = torch.randn(TASKS, 1, 3, dtype=torch.float64).expand(TASKS, 20000, 3)
    torch.manual_seed(1)
    actions = closed_form.sample(policy, params, obs)
    assert actions.shape == (TASKS, 20000, 2)
    for i in range(TASKS):
        pi = functional_call(policy, _task(params, i), (obs[i, :1],))
        torch.testing.assert_close(actions[i].mean(0), pi.mean[0], atol=0.05, rtol=0)
        torch.testing.assert_close(actions[i].std(0), pi.stddev[0], atol=0, rtol=0.03)


def _per_task_hessian_product(loss_of, params, v):
    """Each task's ∇²(loss_of(i, θᵢ)) vᵢ by autograd's double backward, one task at a time."""
    out = {n: [] for n in params}
    for i in range(TASKS):
        theta = {n: t.detach().requires_grad_() for n, t in _task(params, i).items()}
        grads = torch.autograd.grad(loss_of(i, theta), list(theta.values()), create_graph=True)
        dot = sum((g * v[n][i]).sum() for g, n in zip(grads, theta))
        for n, h in zip(theta, torch.autograd.grad(dot, list(theta.values()))):
            out[n].append(h)
    return {n: torch.stack(h) for n, h in out.items()}


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("min_std", [1e-6, 0.9])
def test_policy_gradient_hessian_product_equals_autograd(activation, min_std):
    policy = _policy(activation, min_std=min_std)
    params = _task_params(policy, 4)
    obs, actions, weights = _data(5)
    v = _task_params(policy, 6)

    def loss(i, theta):
        return -(weights[i] * functional_call(policy, theta, (obs[i],)).log_prob(actions[i])).sum()

    product = policy_gradient_hessian(policy, params, obs, actions, weights, grads=None)
    assert isinstance(product, closed_form.PolicyGradientHessian)
    result, expected = product(v), _per_task_hessian_product(loss, params, v)
    assert list(result) == list(v)  # same order as the direction
    for name in v:
        torch.testing.assert_close(result[name], expected[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("min_std", [1e-6, 0.9])
def test_lvc_hessian_product_equals_autograd(activation, min_std):
    """ProMP's loss −Σ w·π/π_o at parameters other than the sampling ones (a ratio ≠ 1)."""
    policy = _policy(activation, min_std=min_std)
    params, sampling = _task_params(policy, 4), _task_params(policy, 5)
    obs, actions, weights = _data(5)
    v = _task_params(policy, 6)

    def log_prob(theta, i):
        return functional_call(policy, theta, (obs[i],)).log_prob(actions[i])

    def loss(i, theta):
        old = log_prob(_task(sampling, i), i).detach()
        return -(weights[i] * torch.exp(log_prob(theta, i) - old)).sum()

    ratio = torch.stack(
        [torch.exp(log_prob(_task(params, i), i) - log_prob(_task(sampling, i), i)) for i in range(TASKS)]
    )
    product = policy_gradient_hessian(policy, params, obs, actions, weights * ratio.detach(), None, True)
    result, expected = product(v), _per_task_hessian_product(loss, params, v)
    assert ratio.std() > 0.05  # the test is not only at the sampling point
    for name in v:
        torch.testing.assert_close(result[name], expected[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fisher_product_equals_autograd_hessian_of_the_kl(activation):
    policy = _policy(activation, min_std=0.9)
    at = _task_params(policy, 7)
    obs, _, weights = _data(8)
    weights = weights.abs()
    v = _task_params(policy, 9)

    def kl(i, theta):
        pi_old = functional_call(policy, _task(at, i), (obs[i],))
        return (weights[i] * kl_divergence(pi_old, functional_call(policy, theta, (obs[i],)))).sum()

    product = fisher_product(policy, at, obs, weights)
    assert isinstance(product, closed_form.FisherProduct)
    result, expected = product(v), _per_task_hessian_product(kl, at, v)
    for name in v:
        torch.testing.assert_close(result[name], expected[name], rtol=1e-9, atol=1e-10)


def test_other_policies_get_the_autograd_products():
    policy = _policy("elu")
    params = _task_params(policy, 10)
    obs, actions, weights = _data(11)
    v = _task_params(policy, 12)
    assert not isinstance(fisher_product(policy, params, obs, weights.abs()), closed_form.FisherProduct)
    with pytest.raises(ValueError, match="create_graph"):
        policy_gradient_hessian(policy, params, obs, actions, weights, grads=None)
    assert np.isfinite(fisher_product(policy, params, obs, weights.abs())(v)["log_std"].numpy()).all()
