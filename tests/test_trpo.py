"""Conjugate gradient, Fisher-vector products and the TRPO outer step."""

import numpy as np
import pytest
import torch
from conftest import episodes_like, small_batch

from metarl.algos.base import SampledBatch
from metarl.algos.curvature import autograd_hessian
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.algos.trpo import conjugate_gradient, flatten
from metarl.config import Config
from metarl.policies.batched import policy_kl
from metarl.sampling.episodes import masked_mean


def test_conjugate_gradient_solves_spd_system():
    torch.manual_seed(0)
    m = torch.randn(12, 12, dtype=torch.float64)
    a = m @ m.T + 12 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=12)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-6)


def test_autograd_hessian_product_of_a_quadratic():
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    a = torch.randn(5, 5, dtype=torch.float64)
    h = a @ a.T
    (grad,) = torch.autograd.grad(0.5 * w @ h @ w, [w], create_graph=True)
    v = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(autograd_hessian({"w": w}, {"w": grad})({"w": v})["w"], h @ v)


def _batch_for(policy, family, train, lr=0.1):
    learner = MAMLTRPO(policy, family, Config(inner_lr=lr), max_kl=0.01)
    params = dict(policy.named_parameters())
    adaptation = learner.adapt(params, train, first_order=False)
    valid = train  # the same states serve as validation data here
    batch = SampledBatch.of(policy, train, valid, adaptation, len(train))
    return learner, params, adaptation, batch


def test_trpo_step_stays_within_max_kl_and_improves():
    policy, family, _, train = small_batch()
    learner, params, adaptation, batch = _batch_for(policy, family, train)
    before = flatten([p.detach().clone() for p in params.values()])
    loss_before = learner.objective(params, adaptation.params, batch).loss.item()
    metrics = learner._trpo_update(params, adaptation, batch)
    assert metrics["train/line_search_accepted"] == 1.0
    assert not torch.equal(before, flatten(list(params.values())))
    # independent check: re-adapt at the new θ and measure KL to the old adapted policies
    new_adapted = learner.adapt(dict(policy.named_parameters()), train, first_order=True).params
    kl = masked_mean(policy_kl(policy, batch.old_adapted, new_adapted, train.observations), train.mask).mean()
    assert kl.item() < learner.config.max_kl
    assert np.isclose(kl.item(), metrics["train/kl"], rtol=1e-6)
    assert learner.objective(dict(policy.named_parameters()), new_adapted, batch).loss.item() < loss_before


def test_rejected_line_search_leaves_theta_unchanged():
    policy, family, _, train = small_batch()
    # zero advantages: no step can improve the objective, so every candidate must be rejected
    flat = episodes_like(train, advantages=torch.zeros_like(train.advantages))
    learner, params, adaptation, batch = _batch_for(policy, family, flat)
    before = {n: p.detach().clone() for n, p in params.items()}
    metrics = learner._trpo_update(params, adaptation, batch)
    assert metrics["train/line_search_accepted"] == 0.0
    assert all(torch.equal(before[n], p) for n, p in policy.named_parameters())


def test_allocator_thresholds_are_accepted_by_glibc():
    import platform

    from metarl.allocator import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt tuning is glibc-only")
    assert keep_freed_memory() is True
