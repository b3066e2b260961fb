"""The MAML Fisher-vector product Σᵢ Jᵢᵀ Fᵢ Jᵢ v against the direct Hessian of the KL through adaptation."""

from dataclasses import replace
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.algos.base import SampledBatch
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.algos.meta_sgd import ALPHA, MetaSGDTRPO
from metarl.algos.trpo import conjugate_gradient, flatten, unflatten
from metarl.config import Config
from metarl.policies import GaussianMLP
from metarl.sampling.episodes import Episodes
from metarl_envs.navigation import Navigation2D

TASKS, EPISODES, HORIZON = 3, 4, 6


def _episodes(generator: torch.Generator) -> Episodes:
    """Random float64 episodes; the last steps of some episodes are masked out."""
    shape = (TASKS, EPISODES, HORIZON)
    mask = torch.ones(shape, dtype=torch.float64)
    mask[:, ::2, -2:] = 0.0
    return Episodes(
        observations=torch.randn(*shape, 2, generator=generator, dtype=torch.float64),
        actions=torch.randn(*shape, 2, generator=generator, dtype=torch.float64),
        rewards=torch.zeros(shape, dtype=torch.float64),
        mask=mask,
        advantages=torch.randn(shape, generator=generator, dtype=torch.float64),
    )


def _setup(first_order: bool, num_inner_steps: int, inner_loss: str = "log-likelihood"):
    torch.manual_seed(0)
    box = gym.spaces.Box(-1.0, 1.0, (2,))
    policy = GaussianMLP(box, box, hidden_sizes=[8, 8]).double()
    config = Config(inner_lr=0.5, first_order=first_order, num_inner_steps=num_inner_steps, horizon=HORIZON)
    learner = MAMLTRPO(policy, Navigation2D(), config, inner_loss=inner_loss)
    generator = torch.Generator().manual_seed(0)
    train, valid = _episodes(generator), _episodes(generator)
    params = dict(policy.named_parameters())
    adaptation = learner.adapt(params, train, first_order)
    batch = SampledBatch.of(policy, train, valid, adaptation, len(train))
    return learner, params, adaptation, batch


def _direct_fvp(learner, params, adaptation, batch):
    """(∇²KL + damping·I) v by differentiating the KL's gradient through the inner loop."""
    theta = list(params.values())
    kl = learner.objective(params, adaptation.params, batch).kl
    grad_kl = flatten(torch.autograd.grad(kl, theta, create_graph=True))

    def product(v: torch.Tensor) -> torch.Tensor:
        hv = flatten(torch.autograd.grad(grad_kl @ v, theta, retain_graph=True))
        return hv + learner.cg_damping * v

    return product


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("inner_loss", ["log-likelihood", "lvc"])
@pytest.mark.parametrize(("first_order", "num_inner_steps"), [(False, 1), (False, 2), (True, 1), (True, 2)])
def test_fisher_product_equals_hessian_of_kl_through_adaptation(first_order, num_inner_steps, inner_loss):
    learner, params, adaptation, batch = _setup(first_order, num_inner_steps, inner_loss)
    direct = _direct_fvp(learner, params, adaptation, batch)
    fast = learner._fisher_product(params, adaptation, batch)
    for seed in range(3):
        v = torch.randn(sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(seed))
        assert _relative_error(fast(v.double()), direct(v.double())) < 1e-8


def test_second_order_terms_matter_here():
    """Guards the test above: ignoring dθᵢ'/dθ would give a visibly different product, and the LVC
    inner loss another one than the log-likelihood's."""
    learner, params, adaptation, batch = _setup(False, 1)
    direct = _direct_fvp(learner, params, adaptation, batch)
    adaptation.hessians.clear()
    without_jacobian = learner._fisher_product(params, adaptation, batch)
    v = torch.randn(sum(p.numel() for p in params.values()), dtype=torch.float64)
    assert _relative_error(without_jacobian(v), direct(v)) > 1e-2
    lvc = _direct_fvp(*_setup(False, 1, "lvc"))
    assert _relative_error(lvc(v), direct(v)) > 1e-3


@pytest.mark.parametrize("inner_loss", ["log-likelihood", "lvc"])
def test_trpo_update_takes_the_direct_natural_step(inner_loss):
    learner, params, adaptation, batch = _setup(False, 1, inner_loss)
    # once CG has converged on the LVC problem here, further iterations amplify rounding (1e-16 in
    # the products) to 1e-4 in the direction: compare 5 iterations there
    learner.cg_iters = 10 if inner_loss == "log-likelihood" else 5
    c = learner
    theta = list(params.values())
    before = [p.detach().clone() for p in theta]
    loss = learner.objective(params, adaptation.params, batch).loss
    grad = flatten(torch.autograd.grad(loss, theta, retain_graph=True))
    direct = _direct_fvp(learner, params, adaptation, batch)
    direction = conjugate_gradient(direct, grad, c.cg_iters)
    step = direction * torch.sqrt(c.max_kl / (0.5 * direction @ direct(direction)))

    metrics = learner._trpo_update(params, adaptation, batch)

    assert metrics["train/line_search_accepted"] == 1.0
    expected = flatten(before) - metrics["train/step_size"] * step
    assert _relative_error(flatten(theta).detach(), expected) < 1e-8
    assert np.isclose(metrics["train/expected_improvement"], metrics["train/step_size"] * (grad @ step).item())


def test_subsampled_fisher_product_is_the_direct_one_on_the_first_episodes():
    """cg_subsample = 0.5: the product equals the direct Hessian of the KL on the first half of each
    task's validation episodes, through an inner step on the first half of its train episodes, at the
    sampled θᵢ' (the inner step's Jacobian from the subsample, the Fisher where the episodes came from)."""
    learner, params, adaptation, batch = _setup(False, 1)
    learner.cg_subsample = 0.5
    half = EPISODES // 2
    train, valid = batch.train.first_episodes(half), batch.valid.first_episodes(half)
    assert train.observations.shape[:2] == (TASKS, half)
    sub = replace(batch, train=train, valid=valid, old_log_probs=batch.old_log_probs[:, :half])
    on_half = learner.adapt(params, train, False).params
    # θᵢ'(θ) with the subsample's Jacobian, equal to the sampled θᵢ' at this θ
    moved = {n: on_half[n] - on_half[n].detach() + batch.old_adapted[n] for n in on_half}
    direct = _direct_fvp(learner, params, SimpleNamespace(params=moved), sub)
    fast = learner._fisher_product(params, adaptation, batch)
    full = _direct_fvp(learner, params, adaptation, batch)
    v = torch.randn(sum(p.numel() for p in params.values()), dtype=torch.float64)
    assert _relative_error(fast(v), direct(v)) < 1e-8
    assert _relative_error(fast(v), full(v)) > 1e-2, "the subsample must differ from the full product here"


@pytest.mark.parametrize("inner_loss", ["log-likelihood", "lvc"])
@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_finite_difference_fisher_product_approaches_the_direct_one(inner_loss, num_inner_steps):
    """`fisher_products: finite-difference` (ProMP's reference TRPO): the symmetric difference of the
    KL's gradient, each through a new inner step, is the direct product up to O(ε²)."""
    learner, params, adaptation, batch = _setup(False, num_inner_steps, inner_loss)
    direct = _direct_fvp(learner, params, adaptation, batch)
    v = torch.randn(sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(1))
    v = v.double()
    learner.fisher_products = "finite-difference"
    errors = {}
    for eps in (1e-4, 1e-5):
        learner.fd_eps = eps
        errors[eps] = _relative_error(learner._fisher_product(params, adaptation, batch)(v), direct(v))
    assert errors[1e-5] < 1e-5
    # (random data and inner lr 0.5: large third derivatives, hence the small ε)
    assert 50 < errors[1e-4] / errors[1e-5] < 200, "O(ε²): a symmetric difference, not the exact product"


def test_finite_difference_product_on_a_subsample_differentiates_its_own_inner_step():
    """With cg_subsample 0.5 the difference is of the KL to the sampled θᵢ' through an inner step on
    the first half of the train episodes: the direct Hessian of that KL, second-order term included."""
    learner, params, adaptation, batch = _setup(False, 1)
    learner.cg_subsample, learner.fisher_products, learner.fd_eps = 0.5, "finite-difference", 1e-5
    half = EPISODES // 2
    train, valid = batch.train.first_episodes(half), batch.valid.first_episodes(half)
    sub = replace(batch, train=train, valid=valid, old_log_probs=batch.old_log_probs[:, :half])
    direct = _direct_fvp(learner, params, learner.adapt(params, train, False), sub)
    v = torch.randn(sum(p.numel() for p in params.values()), dtype=torch.float64)
    assert _relative_error(learner._fisher_product(params, adaptation, batch)(v), direct(v)) < 1e-5


def _meta_sgd_setup(first_order: bool, num_inner_steps: int):
    """MetaSGDTRPO on the random float64 episodes, its rates α random, and its (θ, α) by name."""
    torch.manual_seed(0)
    box = gym.spaces.Box(-1.0, 1.0, (2,))
    policy = GaussianMLP(box, box, hidden_sizes=[8, 8]).double()
    config = Config(inner_lr=0.5, first_order=first_order, num_inner_steps=num_inner_steps, horizon=HORIZON)
    learner = MetaSGDTRPO(policy, Navigation2D(), config)
    with torch.no_grad():
        for a in learner.alpha.values():
            a.uniform_(0.1, 0.6)
    generator = torch.Generator().manual_seed(0)
    train, valid = _episodes(generator), _episodes(generator)
    params = learner.step_parameters()
    adaptation = learner.adapt(params, train, first_order)
    batch = SampledBatch.of(policy, train, valid, adaptation, len(train))
    return learner, params, adaptation, batch


@pytest.mark.parametrize(("first_order", "num_inner_steps"), [(False, 1), (False, 2), (True, 2)])
def test_meta_sgd_jacobian_products_match_autograd_in_theta_and_alpha(first_order, num_inner_steps):
    """Σᵢ Jᵢᵀ uᵢ against autograd through the inner loop (α included), and Jᵢ v as its adjoint."""
    learner, params, adaptation, _ = _meta_sgd_setup(first_order, num_inner_steps)
    assert any(name.startswith(ALPHA) for name in params)
    generator = torch.Generator().manual_seed(2)
    u = {n: torch.randn(p.shape, generator=generator, dtype=torch.float64) for n, p in adaptation.params.items()}
    v = {n: torch.randn(p.shape, generator=generator, dtype=torch.float64) for n, p in params.items()}
    pulled = adaptation.vjp(u)
    names = list(adaptation.params)
    direct = torch.autograd.grad([adaptation.params[n] for n in names], list(params.values()),
                                 grad_outputs=[u[n] for n in names], retain_graph=True)  # fmt: skip
    assert _relative_error(flatten([pulled[n] for n in params]), flatten(direct)) < 1e-10
    pushed = adaptation.jvp(v)
    left = sum((u[n] * pushed[n]).sum() for n in names)
    right = sum((pulled[n] * v[n]).sum() for n in params)
    assert abs(left - right) < 1e-10 * abs(right)


@pytest.mark.parametrize("fisher_products", ["exact", "finite-difference"])
def test_meta_sgd_trpo_fisher_product_is_the_hessian_of_the_kl_in_theta_and_alpha(fisher_products):
    learner, params, adaptation, batch = _meta_sgd_setup(False, 1)
    learner.fisher_products = fisher_products
    direct = _direct_fvp(learner, params, adaptation, batch)
    v = torch.randn(sum(p.numel() for p in params.values()), generator=torch.Generator().manual_seed(3)).double()
    product = learner._fisher_product(params, adaptation, batch)(v)
    assert _relative_error(product, direct(v)) < (1e-8 if fisher_products == "exact" else 1e-5)
    alpha = flatten([torch.zeros_like(p) if n.startswith(ALPHA) else p for n, p in unflatten(v, params).items()])
    assert _relative_error(direct(v), direct(alpha)) > 1e-2, "α's share of the product matters here"
