"""Built-in regularizers: found through entry points, values against per-task loops, gradients through adaptation."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

import gymnasium as gym
import pytest
import torch
from torch.distributions import kl_divergence
from torch.func import functional_call

import metarl
from metarl import registry
from metarl.algos.adaptation import adapt
from metarl.errors import ConfigError
from metarl.policies import CategoricalMLP, GaussianMLP
from metarl.policies.batched import unstack
from metarl.regularizers.base import RegularizerContext
from metarl.sampling.episodes import Episodes

NAMES = ["entropy", "kl-prior", "consistency"]
TASKS, EPISODES, HORIZON, OBS, ACTIONS = 3, 2, 4, 2, 3
LR = 0.5


def _episodes(generator: torch.Generator, discrete: bool) -> Episodes:
    """Random float64 episodes of different lengths (masked tails)."""
    shape = (TASKS, EPISODES, HORIZON)
    mask = torch.ones(shape, dtype=torch.float64)
    mask[0, 0, -2:] = 0.0
    mask[1, :, -1:] = 0.0
    if discrete:
        actions = torch.randint(ACTIONS, shape, generator=generator)
    else:
        actions = torch.randn(*shape, ACTIONS, generator=generator, dtype=torch.float64)
    return Episodes(
        observations=torch.randn(*shape, OBS, generator=generator, dtype=torch.float64),
        actions=actions,
        rewards=torch.zeros(shape, dtype=torch.float64),
        mask=mask,
        advantages=torch.randn(shape, generator=generator, dtype=torch.float64),
    )


@pytest.fixture(params=["gaussian", "categorical"])
def setup(request) -> tuple:
    """A tiny float64 policy, its θ, and train/valid batches."""
    torch.manual_seed(0)
    discrete = request.param == "categorical"
    obs_space = gym.spaces.Box(-1.0, 1.0, (OBS,))
    if discrete:
        policy = CategoricalMLP(obs_space, gym.spaces.Discrete(ACTIONS), hidden_sizes=[4])
    else:
        policy = GaussianMLP(obs_space, gym.spaces.Box(-1.0, 1.0, (ACTIONS,)), hidden_sizes=[4])
    policy = policy.double()
    generator = torch.Generator().manual_seed(1)
    train, valid = _episodes(generator, discrete), _episodes(generator, discrete)
    return policy, dict(policy.named_parameters()), train, valid


def _value(name: str, policy, params, train: Episodes, valid: Episodes, first_order: bool = False) -> torch.Tensor:
    """R at θ = `params`, with θᵢ' from one inner step on `train`."""
    adapted = unstack(adapt(policy, params, train, LR, 1, first_order).params)
    return registry.regularizers.load(name)()(RegularizerContext(policy, params, adapted, train.tasks(), valid.tasks()))


# --- independent computations: a Python loop over tasks, plain functional_call, boolean masks -----


def _states(batch: Episodes) -> torch.Tensor:
    return batch.observations[batch.mask.bool()]


def _kl_from_prior(policy, adapted, params, states: torch.Tensor) -> torch.Tensor:
    return kl_divergence(functional_call(policy, adapted, (states,)), functional_call(policy, params, (states,)))


def _entropy(policy, params, adapted, valid) -> torch.Tensor:
    per_task = [functional_call(policy, a, (_states(v),)).entropy().mean() for a, v in zip(adapted, valid)]
    return -torch.stack(per_task).mean()


def _kl_prior(policy, params, adapted, valid) -> torch.Tensor:
    per_task = [_kl_from_prior(policy, a, params, _states(v)).mean() for a, v in zip(adapted, valid)]
    return torch.stack(per_task).mean()


def _consistency(policy, params, adapted, valid) -> torch.Tensor:
    per_task = []
    for i, a in enumerate(adapted):
        labeled = _states(valid[i])
        unlabeled = torch.cat([_states(v) for j, v in enumerate(valid) if j != i])
        gap = _kl_from_prior(policy, a, params, unlabeled).mean() - _kl_from_prior(policy, a, params, labeled).mean()
        per_task.append(gap**2)
    return torch.stack(per_task).mean()


REFERENCE: dict[str, Callable[..., torch.Tensor]] = {
    "entropy": _entropy,
    "kl-prior": _kl_prior,
    "consistency": _consistency,
}


@pytest.mark.parametrize("name", NAMES)
def test_builtin_regularizer_is_an_entry_point_of_metarl(name: str) -> None:
    (entry,) = [ep for ep in metadata.entry_points(group="metarl.regularizers") if ep.name == name]
    assert entry.dist.metadata["Name"] == "metarl"
    row = {r.name: r for r in registry.regularizers.status()}[name]
    assert (row.package, row.error) == ("metarl", None)
    assert issubclass(registry.regularizers.load(name), metarl.Regularizer)


@pytest.mark.parametrize("name", NAMES)
def test_value_matches_a_per_task_loop(setup, name: str) -> None:
    policy, params, train, valid = setup
    value = _value(name, policy, params, train, valid)
    adapted = unstack(adapt(policy, params, train, LR, 1, first_order=False).params)
    assert value.shape == () and torch.isfinite(value)
    torch.testing.assert_close(value, REFERENCE[name](policy, params, adapted, valid.tasks()))
    if name != "entropy":
        assert value > 0


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_theta_through_the_inner_step(setup, name: str) -> None:
    """Autograd matches central finite differences of θ ↦ R(θ, θᵢ'(θ)); first-order adaptation does not."""
    policy, params, train, valid = setup
    theta = {n: p.detach() for n, p in params.items()}

    def gradient(first_order: bool) -> dict[str, torch.Tensor]:
        leaf = {n: p.clone().requires_grad_() for n, p in theta.items()}
        value = _value(name, policy, leaf, train, valid, first_order)
        grads = torch.autograd.grad(value, list(leaf.values()), allow_unused=True, materialize_grads=True)
        return dict(zip(leaf, grads))

    def at(step: float, direction: dict[str, torch.Tensor]) -> float:
        leaf = {n: (p + step * direction[n]).requires_grad_() for n, p in theta.items()}
        return _value(name, policy, leaf, train, valid).item()

    second, first = gradient(first_order=False), gradient(first_order=True)
    assert all(torch.isfinite(g).all() for g in second.values())
    generator = torch.Generator().manual_seed(2)
    eps = 1e-6
    for _ in range(3):
        direction = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in theta.items()}
        numeric = (at(eps, direction) - at(-eps, direction)) / (2 * eps)
        analytic = sum((second[n] * direction[n]).sum() for n in theta).item()
        first_order = sum((first[n] * direction[n]).sum() for n in theta).item()
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)
        assert abs(first_order - numeric) > 1e-4 * max(abs(numeric), 1e-3), "the inner step's term is missing"


def test_consistency_needs_two_tasks(setup) -> None:
    policy, params, train, valid = setup
    with pytest.raises(ConfigError, match="meta_batch_size"):
        _value("consistency", policy, params, train[:1], valid[:1])
