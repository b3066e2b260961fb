"""`metarl evaluate`, `adapt` and `plot`, validation during training, and held-out task streams."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from test_cli import SMALL, metarl
from torch.func import functional_call

from metarl.algos.held_out import TEST_STREAM, VALIDATION_STREAM, held_out_rng
from metarl_envs.navigation import Navigation2D


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    result = metarl(
        "train",
        "--env",
        "navigation-2d",
        "--iterations",
        "3",
        "--logdir",
        str(logdir),
        *SMALL,
        "--set",
        "eval_every=1",
        "--set",
        "eval_tasks=4",
    )
    assert result.returncode == 0, result.stderr
    (run,) = logdir.iterdir()
    return run


def test_evaluate_writes_table_csv_json_png(run_dir):
    result = metarl("evaluate", str(run_dir), "--tasks", "8", "--steps", "2", "--episodes", "10")
    assert result.returncode == 0, result.stderr
    assert "95% interval" in result.stdout
    with (run_dir / "evaluation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert len([k for k in rows[0] if k.startswith("task_")]) == 8
    means = [float(r["mean"]) for r in rows]
    assert means[1] > means[0]  # one inner step on a new task's own episodes helps
    for r in rows:
        per_task = [float(r[f"task_{i}"]) for i in range(8)]
        assert np.isclose(np.mean(per_task), float(r["mean"]))
        assert float(r["ci_low"]) < float(r["mean"]) < float(r["ci_high"])
    document = json.loads((run_dir / "evaluation.json").read_text())
    assert np.array(document["returns"]).shape == (8, 3) and len(document["tasks"]) == 8
    image = matplotlib.image.imread(run_dir / "adaptation_curve.png")
    assert image.ndim == 3 and image.shape[0] > 100


def test_held_out_streams_are_disjoint_from_training():
    family = Navigation2D()
    training = family.sample_tasks(200, np.random.default_rng(0))
    validation = family.sample_tasks(50, held_out_rng(0, VALIDATION_STREAM))
    test = family.sample_tasks(50, held_out_rng(0, TEST_STREAM))
    goals = [tuple(t["goal"]) for t in training]
    assert not set(goals) & {tuple(t["goal"]) for t in validation}
    assert not set(goals) & {tuple(t["goal"]) for t in test}
    assert validation != test


def test_validation_keeps_best_checkpoint(run_dir):
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    scores = [float(r["validation/return_after_adaptation"]) for r in rows]
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["iteration"] == int(np.argmax(scores)) + 1
    assert np.isclose(best["best_validation"], max(scores))


@pytest.mark.slow
def test_adapt_exports_a_model_sb3_loads_and_that_acts_like_metarl(run_dir, tmp_path):
    from stable_baselines3 import PPO

    from metarl.algos.held_out import evaluate_adaptation
    from metarl.checkpoint import load_checkpoint, select_checkpoint
    from metarl.policies.batched import unstack
    from metarl.trainer import trainer_from_run

    task = {"goal": [0.3, -0.2]}
    out = tmp_path / "adapted.zip"
    result = metarl("adapt", str(run_dir), "--task", json.dumps(task), "--steps", "1", "--seed", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    model = PPO.load(out, device="cpu")

    trainer = trainer_from_run(run_dir, load_checkpoint(select_checkpoint(run_dir, "last")))
    adapted = evaluate_adaptation(
        trainer.policy, trainer.family, trainer.config, [task], 1, trainer.config.fast_batch_size, 5, trainer.device
    )
    params = unstack(adapted.adapted_params)[0]
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, size=(16, 2)).astype(np.float32)
    sb3_actions, _ = model.predict(obs, deterministic=True)
    with torch.no_grad():
        ours = functional_call(trainer.policy, params, (torch.as_tensor(obs),)).mean.numpy()
    assert np.allclose(sb3_actions, np.clip(ours, -0.1, 0.1), atol=1e-5)
    assert not np.allclose(
        ours,
        functional_call(trainer.policy, dict(trainer.policy.named_parameters()), (torch.as_tensor(obs),))
        .mean.detach()
        .numpy(),
    )
    model.set_env(trainer.family.make_env(task))
    model.learn(64)  # and SB3 can keep training it


def test_plot_puts_several_runs_on_one_png(run_dir, tmp_path):
    out = tmp_path / "curves.png"
    result = metarl("plot", str(run_dir), str(run_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert matplotlib.image.imread(out).shape[1] > 500


@pytest.mark.parametrize(
    "args,needle",
    [
        (["evaluate", "/no/such/run"], "not a metarl run directory"),
        (["plot", "/no/such/run"], "not a metarl run directory"),
    ],
)
def test_bad_paths(args, needle):
    result = metarl(*args)
    assert result.returncode == 2 and needle in result.stderr
