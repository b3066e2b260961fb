"""The meta-learners of `metarl.algorithms`: found by name, learn on navigation, and their maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import small_batch
from torch.func import functional_call

from metarl import registry
from metarl.algos import base, maml_trpo
from metarl.algos.adaptation import policy_gradient_loss
from metarl.algos.base import VALIDATION_METRIC, GradientMetaLearner, MetaLearner, SampledBatch
from metarl.build import make_family, make_learner, make_policy, probe_spaces, seed_everything
from metarl.config import build_config
from metarl.policies import batched, closed_form
from metarl.policies.batched import detach, stack
from metarl.sampling.episodes import masked_mean
from metarl_envs.navigation import Navigation2D

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LEARNERS = ["promp", "maml-vpg", "meta-sgd", "e-maml"]
SMALL = {"seed": 1, "meta_batch_size": 10, "fast_batch_size": 10, "horizon": 100, "eval_every": 0}


def _learner(name: str, **overrides):
    config = build_config(Navigation2D.reference_config(), {**SMALL, "algo": name, **overrides})
    family = make_family(config)
    rng = seed_everything(config.seed)
    policy = make_policy(config, *probe_spaces(family, config.env))
    return make_learner(config, policy, family), rng


def _run(learner, rng, iterations: int) -> list[dict[str, float]]:
    history = []
    for _ in range(iterations):
        metrics = learner.step(rng)
        learner.end_iteration(metrics)
        history.append(metrics)
    return history


@pytest.mark.parametrize("name", ["maml-trpo", "e-maml-trpo", "meta-sgd-trpo", *LEARNERS])
def test_learner_is_found_through_its_entry_point(name):
    cls = registry.algorithms.load(name)
    assert callable(cls.step)
    row = next(r for r in registry.algorithms.status() if r.name == name)
    assert row.package == "metarl" and row.error is None
    assert issubclass(cls, MetaLearner)


def test_a_class_that_is_not_a_meta_learner_is_refused():
    with pytest.raises(TypeError, match="MetaLearner"):
        registry.algorithms._check(object)


@pytest.mark.parametrize("name", LEARNERS)
def test_short_run_learns_to_adapt(name):
    learner, rng = _learner(name, outer_lr=0.01)
    history = _run(learner, rng, 10)
    before = np.array([m["return/before_adaptation"] for m in history])
    after = np.array([m["return/after_adaptation"] for m in history])
    assert all(m["train/non_finite"] == 0.0 and "train/line_search_accepted" not in m for m in history)
    assert after[-3:].mean() > after[0] + 15.0
    assert after[-3:].mean() > before[-3:].mean() + 2.0


@pytest.mark.parametrize("name", LEARNERS)
def test_several_inner_steps(name):
    learner, rng = _learner(name, num_inner_steps=2, meta_batch_size=4, fast_batch_size=4, horizon=20)
    theta = [p.detach().clone() for p in learner.policy.parameters()]
    metrics = learner.step(rng)
    assert metrics["train/non_finite"] == 0.0 and math.isfinite(metrics["return/after_adaptation"])
    assert any(not torch.equal(a, b) for a, b in zip(theta, learner.policy.parameters()))


def _config(**overrides):
    return build_config({"inner_lr": 0.1, **overrides})


def test_meta_sgd_adapts_with_per_parameter_rates_like_a_per_task_loop():
    policy, family, _, train = small_batch()
    learner = make_learner(_config(algo="meta-sgd"), policy, family)
    torch.manual_seed(3)
    for a in learner.alpha.values():
        a.data = torch.rand_like(a) * 0.2
    params = dict(policy.named_parameters())
    adapted = learner.adapt(params, train, first_order=False).params
    for i in range(len(train)):
        task = train[i]
        logp = functional_call(policy, params, (task.observations,)).log_prob(task.actions)
        loss = -masked_mean(logp * task.advantages, task.mask)
        grads = torch.autograd.grad(loss, list(params.values()))
        for (name, p), g in zip(params.items(), grads):
            assert torch.allclose(adapted[name][i], p - learner.alpha[name] * g, atol=1e-10), name
    # θ' depends on α, so the outer step learns it
    grad_alpha = torch.autograd.grad(adapted["mean.weight"].sum(), learner.alpha["mean.weight"])[0]
    assert grad_alpha.abs().sum() > 0


def test_promp_lvc_has_the_policy_gradient_but_another_hessian():
    policy, family, _, train = small_batch()
    learner = make_learner(_config(algo="promp"), policy, family)
    params = dict(policy.named_parameters())
    learner.sampling_params = detach(params)
    theta = list(params.values())
    stacked = stack(params, len(train))
    g_lvc = torch.autograd.grad(learner.inner_objective(stacked, train).sum(), theta, create_graph=True)
    g_pg = torch.autograd.grad(policy_gradient_loss(policy, stacked, train).sum(), theta, create_graph=True)
    for a, b in zip(g_lvc, g_pg):
        assert torch.allclose(a, b, atol=1e-10)
    torch.manual_seed(0)
    v = [torch.randn_like(p) for p in theta]
    h_lvc = torch.autograd.grad(sum((g * u).sum() for g, u in zip(g_lvc, v)), theta)
    h_pg = torch.autograd.grad(sum((g * u).sum() for g, u in zip(g_pg, v)), theta)
    difference = sum((a - b).norm() ** 2 for a, b in zip(h_lvc, h_pg)).sqrt()
    assert difference > 1e-3 * sum(b.norm() ** 2 for b in h_pg).sqrt()


def _outer_gradient(learner, params, batch) -> torch.Tensor:
    loss = learner.outer_loss(params, batch.adaptation, batch, batch.old_log_probs)["loss"]
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True)
    return torch.cat([g.reshape(-1) for g in grads])


def test_e_maml_exploration_term_adds_a_gradient_that_vanishes_with_zero_weight():
    policy, family, _, train = small_batch()
    _, _, _, valid = small_batch(seed=1)
    params = dict(policy.named_parameters())
    maml = GradientMetaLearner(policy, family, _config())
    reference = None
    for weight in (0.0, 1.0):
        learner = make_learner(_config(algo="e-maml", exploration_weight=weight), policy, family)
        batch = SampledBatch.of(policy, train, valid, learner.adapt(params, train, False), len(train))
        reference = _outer_gradient(maml, params, batch) if reference is None else reference
        extra = _outer_gradient(learner, params, batch) - reference
        assert (extra.norm() > 1e-6) == bool(weight), weight


def test_maml_vpg_lowers_the_rate_on_a_plateau():
    policy, family, _, _ = small_batch()
    learner = make_learner(_config(algo="maml-vpg", lr_patience=1, lr_factor=0.5, outer_lr=0.01), policy, family)
    learner.end_iteration({VALIDATION_METRIC: -10.0})
    learner.end_iteration({VALIDATION_METRIC: math.nan})  # an iteration without validation: ignored
    learner.end_iteration({VALIDATION_METRIC: -12.0})
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    learner.end_iteration({VALIDATION_METRIC: -13.0})
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_maml_vpg_with_lr_factor_one_keeps_a_fixed_rate_as_promp_s_reference():
    policy, family, _, _ = small_batch()
    learner = make_learner(_config(algo="maml-vpg", lr_patience=0, lr_factor=1.0, outer_lr=0.01), policy, family)
    for value in (-10.0, -12.0, -13.0, -14.0):
        learner.end_iteration({VALIDATION_METRIC: value})
    assert learner.optimizer.param_groups[0]["lr"] == 0.01
    assert "scheduler" not in learner.state_dict()


def test_meta_sgd_evaluation_adapts_with_the_learned_rates():
    """Validation and `metarl evaluate` must step with α, not the config's scalar inner_lr."""
    from metarl.config import build_config
    from metarl.policies.batched import unstack
    from metarl.trainer import Trainer

    config = build_config({"env": "navigation-2d", "algo": "meta-sgd", "meta_batch_size": 2, "fast_batch_size": 2,
                           "horizon": 5, "eval_every": 0})  # fmt: skip
    trainer = Trainer(config)
    with torch.no_grad():
        for alpha in trainer.learner.alpha.values():
            alpha.zero_()
    tasks = trainer.family.sample_tasks(2, np.random.default_rng(0))
    adapted = unstack(trainer.evaluate(tasks, 1, 2, seed=0).adapted_params)
    for task_params in adapted:  # α = 0: adaptation leaves θ where it was
        for name, p in trainer.policy.named_parameters():
            assert torch.equal(task_params[name], p.detach()), name


def test_promp_adapts_its_kl_weight_on_the_kl_after_the_last_adam_step():
    learner, rng = _learner("promp", inner_kl_adaptive=True, inner_kl_target=1e-9, inner_kl_coef=1e-3,
                            meta_batch_size=4, fast_batch_size=4, horizon=20)  # fmt: skip
    batch = learner.sample(rng)
    metrics = learner.update(batch)
    # independent: the KL of the sampling policy to the policy that the 5 Adam steps left
    with torch.no_grad():
        kl = learner.inner_kl(dict(learner.policy.named_parameters()), batch).item()
    assert metrics["train/inner_kl_last"] == pytest.approx(kl, rel=1e-6) and kl > 0
    assert metrics["train/inner_kl_coef"] == pytest.approx(2e-3)  # far above the target: doubled


def _promp_after_one_update(**algo_kwargs):
    algo_kwargs = {"outer_lr": 0.05, **algo_kwargs}
    learner, rng = _learner("promp", meta_batch_size=4, fast_batch_size=4, horizon=20, algo_kwargs=algo_kwargs)
    batch = learner.sample(rng)
    metrics = learner.update(batch)
    with torch.no_grad():
        kl = learner.inner_kl(dict(learner.policy.named_parameters()), batch).item()
    return learner, metrics, kl


def test_promp_max_inner_kl_undoes_the_step_that_crosses_it():
    free, free_metrics, free_kl = _promp_after_one_update()
    assert free_metrics["train/outer_steps_taken"] == 5 and free_metrics["train/outer_step_undone"] == 0
    assert torch.equal(flat_theta(free), flat_theta(_promp_after_one_update(max_inner_kl=1e9)[0]))

    bound = 0.9 * free_kl
    bounded, metrics, kl = _promp_after_one_update(max_inner_kl=bound)
    assert kl <= bound < free_kl
    assert 0 < metrics["train/outer_steps_taken"] < 5 and metrics["train/outer_step_undone"] == 1

    untouched, _ = _learner("promp", meta_batch_size=4, fast_batch_size=4, horizon=20)
    stopped, metrics, kl = _promp_after_one_update(max_inner_kl=1e-12)
    assert metrics["train/outer_steps_taken"] == 0 and kl == 0.0
    assert torch.equal(flat_theta(stopped), flat_theta(untouched)), "θ as before the undone step"
    assert all(not state for state in stopped.optimizer.state.values()), "and Adam's moments too"


def flat_theta(learner) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in learner.policy.parameters()])


def test_maml_vpg_keeps_its_rate_without_validation():
    learner, rng = _learner("maml-vpg", lr_patience=0, outer_lr=0.01, meta_batch_size=4, fast_batch_size=4, horizon=20)
    for metrics in _run(learner, rng, 3):
        assert metrics["train/outer_lr"] == 0.01


def test_every_iteration_logs_the_policy_std():
    learner, rng = _learner("maml-trpo", meta_batch_size=4, fast_batch_size=4, horizon=20)
    with torch.no_grad():
        learner.policy.log_std.fill_(math.log(0.5))
    metrics = learner.step(rng)
    assert metrics["policy/std"] == pytest.approx(learner.policy.log_std.exp().mean().item())
    assert 0.3 < metrics["policy/std"] < 0.7


def test_e_maml_trpo_is_maml_trpo_plus_the_exploration_term():
    """λ = 0 takes MAML-TRPO's step exactly; λ > 0 another, still inside the trust region."""
    # navigation-2d's maml-trpo section sets cg_subsample 0.5 and inner_loss lvc; e-maml-trpo has none there
    small = {"meta_batch_size": 4, "fast_batch_size": 4, "horizon": 20, "cg_subsample": 0.5}
    small["algo_kwargs"] = {"inner_loss": "lvc"}
    thetas = {}
    for name, weight in (("maml-trpo", None), ("e-maml-trpo", 0.0), ("e-maml-trpo", 1.0)):
        extra = {} if weight is None else {"exploration_weight": weight}
        learner, rng = _learner(name, **small, **extra)
        metrics = learner.step(rng)
        assert metrics["train/line_search_accepted"] == 1.0 and metrics["train/kl"] < learner.max_kl
        assert ("train/exploration" in metrics) == bool(weight)
        thetas[name, weight] = torch.cat([p.detach().reshape(-1) for p in learner.policy.parameters()])
    assert torch.equal(thetas["maml-trpo", None], thetas["e-maml-trpo", 0.0])
    assert not torch.allclose(thetas["maml-trpo", None], thetas["e-maml-trpo", 1.0])


def test_meta_sgd_trpo_learns_and_moves_its_rates_inside_the_trust_region():
    learner, rng = _learner("meta-sgd-trpo")
    history = _run(learner, rng, 10)
    after = np.array([m["return/after_adaptation"] for m in history])
    before = np.array([m["return/before_adaptation"] for m in history])
    assert all(m["train/line_search_accepted"] == 1.0 and m["train/kl"] < learner.max_kl for m in history)
    assert after[-3:].mean() > after[0] + 30.0 and after[-3:].mean() > before[-3:].mean() + 5.0
    rates = torch.cat([a.detach().reshape(-1) for a in learner.alpha.values()])
    assert (rates - learner.config.inner_lr).abs().max() > 0.1, "the TRPO step moves α too"


def test_meta_sgd_trpo_checkpoint_holds_its_rates(tmp_path):
    from metarl.trainer import Trainer

    config = build_config({"env": "navigation-2d", "algo": "meta-sgd-trpo", "meta_batch_size": 2,
                           "fast_batch_size": 2, "horizon": 5, "eval_every": 0})  # fmt: skip
    trainer = Trainer(config)
    trainer.start_run(tmp_path)
    trainer.train(2)
    trainer.save()
    trainer.release_run_dir()
    restored = Trainer.from_run(trainer.run_dir, "last")
    assert any(not torch.all(a == config.inner_lr) for a in trainer.learner.alpha.values())
    for name, alpha in trainer.learner.alpha.items():
        assert torch.equal(restored.learner.alpha[name], alpha.detach()), name


def test_an_iteration_takes_the_lvc_denominator_and_the_kl_to_the_sampling_policies_once(monkeypatch):
    """The LVC loss's log πθo and the line search's KL pass at the sampling θᵢ' are computed once
    per batch, and give the values computed afresh."""
    calls = {"log_probs": 0, "kl_from": 0}
    sampling_log_probs, kl_from = base.sampling_log_probs, maml_trpo.policy_kl_from

    def count(name, fn):
        def counted(*args):
            calls[name] += 1
            return fn(*args)

        return counted

    monkeypatch.setattr(base, "sampling_log_probs", count("log_probs", sampling_log_probs))
    monkeypatch.setattr(maml_trpo, "policy_kl_from", count("kl_from", kl_from))
    learner, rng = _learner("maml-trpo", algo_kwargs={"inner_loss": "lvc", "cg_subsample": 1.0})
    batch = learner.sample(rng)
    assert calls["log_probs"] == 1  # the inner step of the sampling
    cached = learner._lvc_log_probs(batch.train)
    sampling = stack(learner.sampling_params, len(batch.train))
    fresh = batched.log_probs(learner.policy, sampling, batch.train.observations, batch.train.actions)
    assert torch.equal(cached, fresh)
    metrics = learner.update(batch)
    assert metrics["train/line_search_steps"] >= 1
    assert calls == {"log_probs": 1, "kl_from": 1}  # every line-search step reused both
    adapted = detach(batch.require_old_adapted())
    moved = {name: p + 0.01 for name, p in adapted.items()}
    obs = batch.require_valid().observations
    kl = closed_form.KLFrom(learner.policy, adapted, obs)
    assert torch.equal(kl(moved), closed_form.kl(learner.policy, adapted, moved, obs))
    assert kl(adapted).abs().max() < 1e-6
