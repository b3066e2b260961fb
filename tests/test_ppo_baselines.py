"""`metarl evaluate --baseline`: PPO pretrained on the family and PPO from scratch, with tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn

from metarl.algos.held_out import TEST_STREAM, evaluate_adaptation, held_out_rng
from metarl.config import build_config
from metarl.errors import MetarlError
from metarl.evaluation import write_evaluation
from metarl.ppo_baselines import (
    TaskResamplingEnv,
    evaluate_baselines,
    format_baselines,
    from_sb3_ppo,
    mean_curve,
    pretrain_ppo,
    running_mean,
    sample_efficiency,
    sb3_policy_kwargs,
    steps_to_reach,
)
from metarl.trainer import Trainer
from metarl_envs.navigation import Navigation2D

HORIZON, EPISODES, STEPS, PPO_STEPS = 20, 4, 2, 256


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Trainer, Path, object]:
    """A 2-iteration navigation run, evaluated on 4 held-out tasks (written as `metarl evaluate` does)."""
    small = {"meta_batch_size": 4, "fast_batch_size": 4, "horizon": HORIZON, "hidden_sizes": [16, 16], "eval_every": 0}
    trainer = Trainer(build_config(Navigation2D.reference_config(), small))
    run_dir = trainer.start_run(tmp_path_factory.mktemp("runs"))
    trainer.train(2)
    tasks = trainer.family.sample_tasks(4, held_out_rng(0, TEST_STREAM))
    result = evaluate_adaptation(
        trainer.policy, trainer.family, trainer.config, tasks, STEPS, EPISODES, 0, trainer.device
    )
    write_evaluation(run_dir, result, {"env": trainer.config.env})
    return trainer, run_dir, result


def test_pretrained_policy_has_the_ppo_actor_weights(evaluated):
    trainer, _, _ = evaluated
    model = pretrain_ppo(trainer.family, trainer.policy, HORIZON, PPO_STEPS, 0.99, seed=0)
    assert model.num_timesteps >= PPO_STEPS
    converted = from_sb3_ppo(trainer.policy, model)
    assert type(converted) is type(trainer.policy) and converted is not trainer.policy
    obs = torch.rand(32, 2) - 0.5
    with torch.no_grad():
        ours = converted(obs)
        theirs = model.policy.get_distribution(obs)
        torch.testing.assert_close(ours.mode, theirs.mode())
        torch.testing.assert_close(ours.log_prob(ours.mode), theirs.log_prob(ours.mode))
        assert not torch.allclose(trainer.policy(obs).mode, ours.mode)  # not the meta-learned weights


def test_network_shape_matches_the_run(evaluated):
    trainer, _, _ = evaluated
    kwargs = sb3_policy_kwargs(trainer.policy)
    assert kwargs["net_arch"] == {"pi": [16, 16], "vf": [16, 16]}
    assert kwargs["activation_fn"] is nn.Tanh and kwargs["ortho_init"] is False
    with pytest.raises(MetarlError, match="gaussian-mlp"):
        sb3_policy_kwargs(nn.Linear(2, 2))


def test_resampling_env_draws_a_task_per_episode():
    def goals(seed: int) -> list[tuple[float, ...]]:
        env = TaskResamplingEnv(Navigation2D(), np.random.default_rng(seed))
        env.reset(seed=0)
        drawn = []
        for _ in range(3):
            drawn.append(tuple(env.env.goal))
            env.reset()
        return drawn

    assert len(set(goals(0))) == 3
    assert goals(0) == goals(0) != goals(1)


@pytest.mark.slow
def test_evaluate_baselines_writes_curves_and_numbers(evaluated):
    trainer, run_dir, result = evaluated
    before = json.loads((run_dir / "evaluation.json").read_text())
    document, paths = evaluate_baselines(trainer, result, ["pretrained", "scratch"], PPO_STEPS, 2, EPISODES, 0, run_dir)
    assert {p.name for p in paths} == {"adaptation_curve.png", "scratch_ppo_curve.png", "evaluation.json"}
    for name in ("adaptation_curve.png", "scratch_ppo_curve.png"):
        assert matplotlib.image.imread(run_dir / name).ndim == 3
    written = json.loads((run_dir / "evaluation.json").read_text())
    assert written == {**before, "baselines": document}

    pretrained = written["baselines"]["pretrained"]
    assert np.array(pretrained["returns"]).shape == (4, STEPS + 1)

    scratch = written["baselines"]["scratch"]
    assert scratch["tasks"] == len(scratch["per_task"]) == 2
    assert scratch["meta_learned_env_steps"] == STEPS * EPISODES * HORIZON
    assert np.isclose(scratch["target"], result.returns[:2, -1].mean())
    for task, row in zip(scratch["per_task"], result.returns):
        assert task["target"] == pytest.approx(row[-1])
        assert len(task["episode_end_steps"]) == len(task["episode_returns"]) > 0
        assert max(task["episode_end_steps"]) <= PPO_STEPS
    steps = np.array(scratch["mean_curve"]["steps"])
    values = np.array([np.nan if v is None else v for v in scratch["mean_curve"]["return"]])
    assert scratch["steps_to_reach"] == steps_to_reach(steps, values, scratch["target"])
    assert scratch["sample_efficiency_ratio"] == sample_efficiency(
        scratch["steps_to_reach"], scratch["meta_learned_env_steps"]
    )
    assert "PPO from scratch (2 tasks)" in format_baselines(document)


def test_unknown_baseline_is_a_user_error(evaluated):
    trainer, run_dir, result = evaluated
    with pytest.raises(MetarlError, match="unknown baseline"):
        evaluate_baselines(trainer, result, ["oracle"], PPO_STEPS, 1, EPISODES, 0, run_dir)


def test_sample_efficiency_on_a_synthetic_curve():
    # One episode of 100 steps each; returns climb by 1 per episode from −20.
    steps = np.arange(1, 31) * 100
    returns = np.arange(30, dtype=float) - 20
    smoothed = running_mean(returns, 4)
    assert np.isnan(smoothed[:3]).all()
    np.testing.assert_allclose(smoothed[3:], returns[3:] - 1.5)
    # The mean first reaches −5 over episodes 15..18 (returns −6..−3), which end at step 1800.
    reached = steps_to_reach(steps, smoothed, -5.0)
    assert reached == 1800
    assert sample_efficiency(reached, 3 * 10 * 20) == pytest.approx(1800 / 600)
    assert steps_to_reach(steps, smoothed, 100.0) is None
    assert sample_efficiency(None, 600) is None
    assert sample_efficiency(1700, 0) is None


def test_mean_curve_holds_each_curves_last_value():
    grid, mean = mean_curve([(np.array([10, 30]), np.array([1.0, 3.0])), (np.array([20]), np.array([5.0]))])
    np.testing.assert_array_equal(grid, [10, 20, 30])
    np.testing.assert_allclose(mean, [np.nan, 3.0, 4.0])
