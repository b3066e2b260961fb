"""metarl-metaworld: found through entry points, Meta-World tasks and success, a short ML1 training run.

Runs in an environment with this package installed (metaworld pins mujoco==3.3.0); `.ci/run` makes one.
"""

import csv
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import metaworld
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from metarl_metaworld.families import MetaWorldFamily, ML10Test, ML10Train
from metaworld.policies import SawyerReachV3Policy

from metarl import registry
from metarl.errors import ConfigError
from metarl.sampling import GymVectorTaskEnv

PACKAGE = "metarl-metaworld"


def test_mujoco_is_the_version_metaworld_pins() -> None:
    assert mujoco.__version__ == "3.3.0"


def test_every_family_is_an_entry_point_of_this_package() -> None:
    ours = {ep.name: ep for ep in metadata.entry_points(group="metarl.envs") if ep.dist.name == PACKAGE}
    expected = {f"metaworld-ml1-{name.removesuffix('-v3')}" for name in metaworld.ML1.ENV_NAMES}
    expected |= {f"metaworld-ml{n}-{split}" for n in (10, 45) for split in ("train", "test")}
    assert set(ours) == expected
    for name in ours:
        family = registry.envs.load(name)
        assert issubclass(family, MetaWorldFamily), name
    assert registry.envs.load("metaworld-ml1-pick-place").env_name == "pick-place-v3"
    rows = {row.name: row for row in registry.envs.status()}
    assert rows["metaworld-ml1-reach"].package == PACKAGE and rows["metaworld-ml1-reach"].error is None


def test_ml1_splits_are_disjoint_goals_and_sampling_is_seeded() -> None:
    family_cls = registry.envs.load("metaworld-ml1-reach")
    train, test = family_cls(), family_cls(split="test")
    tasks = train.sample_tasks(8, np.random.default_rng(3))
    assert tasks == train.sample_tasks(8, np.random.default_rng(3))
    assert {t["env_name"] for t in tasks} == {"reach-v3"}
    train_goals = {bytes(t.data) for t in train.goals["reach-v3"]}
    test_goals = {bytes(t.data) for t in test.goals["reach-v3"]}
    assert len(train_goals) == len(test_goals) == 50 and not train_goals & test_goals
    with pytest.raises(ConfigError, match="split"):
        family_cls(split="validation")


def test_ml10_train_and_test_hold_different_environments_in_balanced_batches() -> None:
    train, test = ML10Train(), ML10Test()
    assert len(train.env_classes) == 10 and len(test.env_classes) == 5
    assert not set(train.env_classes) & set(test.env_classes)
    tasks = train.sample_tasks(20, np.random.default_rng(0))
    counts = {name: sum(t["env_name"] == name for t in tasks) for name in train.env_classes}
    assert set(counts.values()) == {2}, counts
    with pytest.raises(ConfigError, match="not in this train split"):
        train.make_env({"env_name": next(iter(test.env_classes)), "goal": 0})


def test_scripted_reach_succeeds_and_the_success_is_sampled() -> None:
    """Meta-World's scripted reach policy succeeds; a motionless arm does not; the sampler sees both."""
    family = registry.envs.load("metaworld-ml1-reach")()
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    env = GymVectorTaskEnv(family, tasks, 1, torch.device("cpu"))
    scripted, obs = SawyerReachV3Policy(), env.reset(seed=0)
    # the scripted policy needs the goal, which ML observations hide: give it each env's own goal
    goals = [e.unwrapped._target_pos for e in env.envs]
    for _ in range(150):
        full = obs.reshape(2, -1).numpy().astype(np.float64)
        full[:, 36:39] = goals
        action = torch.as_tensor(np.stack([scripted.get_action(o) for o in full]), dtype=torch.float32)
        obs, _, _ = env.step(action.view(2, 1, -1))
    assert torch.equal(env.episode_successes(), torch.ones(2, 1))
    env.reset(seed=0)
    for _ in range(20):
        env.step(torch.zeros(2, 1, 4))
    assert torch.equal(env.episode_successes(), torch.zeros(2, 1))
    env.close()


def test_envs_are_reused_across_meta_batches() -> None:
    family = registry.envs.load("metaworld-ml1-reach")()
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    first = GymVectorTaskEnv(family, tasks, 2, torch.device("cpu"))
    built = {id(e.unwrapped) for e in first.envs}
    first.close()
    second = GymVectorTaskEnv(family, family.sample_tasks(3, np.random.default_rng(1)), 2, torch.device("cpu"))
    assert {id(e.unwrapped) for e in second.envs} == built
    check_env(second.envs[0], skip_render_check=True)
    second.close()
    second.envs[0].close()  # closing twice returns it once
    assert len(family._pools["reach-v3"]) == 6


def test_short_ml1_reach_training_logs_return_and_success_rate(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [sys.executable, "-m", "metarl", "train", "--env", "metaworld-ml1-reach", "--iterations", "2",
               "--seed", "0", "--logdir", str(tmp_path), "--no-progress", "--set", "meta_batch_size=2",
               "--set", "fast_batch_size=2", "--set", "horizon=40", "--set", "hidden_sizes=[16]",
               "--set", "eval_every=0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    assert len(rows) == 2
    for row in rows:
        assert np.isfinite(float(row["return/after_adaptation"]))
        assert 0.0 <= float(row["success_rate/after_adaptation"]) <= 1.0
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"return/before_adaptation", "success_rate/before_adaptation", "success_rate/after_adaptation"} <= tags
    # the run adapts to the held-out goals of ML1's test split
    command = [sys.executable, "-m", "metarl", "evaluate", str(run_dir), "--env-kwargs", "{split: test}",
               "--tasks", "2", "--steps", "1", "--episodes", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    evaluated = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluated["evaluated_on"] == {"env": "metaworld-ml1-reach", "env_kwargs": {"split": "test"}}
    assert np.array(evaluated["returns"]).shape == (2, 2)
    assert np.array(evaluated["success"]).shape == (2, 2)
    assert "success rate" in done.stdout
