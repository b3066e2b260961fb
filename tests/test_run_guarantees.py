"""What a run directory survives: one writer at a time, overrides on resume honoured or refused, a
plugin failing mid-run named (with a checkpoint on the way out), a NaN loss refused, a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import installed_distribution
from test_cli import SMALL, metarl

from metarl.config import build_config
from metarl.errors import ConfigError, MetarlError, PluginError
from metarl.loggers.progress import CSVLogger
from metarl.run_lock import LOCK_FILE, RunDirectoryInUse
from metarl.trainer import Trainer, resume_trainer

TINY = {"meta_batch_size": 2, "fast_batch_size": 2, "horizon": 5, "eval_every": 0, "loggers": ["csv"]}

MID_RUN_MODULE = """
import gymnasium as gym
import numpy as np
import torch
from metarl import Regularizer, TaskDistribution
from metarl_envs.navigation import Navigation2D


class LateFailing(Navigation2D):
    '''Samples tasks for the probe, the validation set and two meta-batches, then raises.'''

    config_file = "metarl_envs:configs/navigation-2d.yaml"
    calls = 0

    def sample_tasks(self, num_tasks, rng):
        type(self).calls += 1
        if type(self).calls > 4:
            raise RuntimeError("task server unreachable")
        return super().sample_tasks(num_tasks, rng)


class WideObservations(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


class WideFamily(TaskDistribution):
    max_episode_steps = 5

    def sample_tasks(self, num_tasks, rng):
        return [{"k": int(i)} for i in range(num_tasks)]

    def make_env(self, task):
        return WideObservations()


class NaNRegularizer(Regularizer):
    def __call__(self, ctx):
        return torch.tensor(float("nan"))


class RaisingRegularizer(Regularizer):
    def __call__(self, ctx):
        raise ValueError("the prior file is corrupt")
"""


@pytest.fixture
def mid_run_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    entry_points = {
        "metarl.envs": {"late-failing": "mid_run_mod:LateFailing", "wide-observations": "mid_run_mod:WideFamily"},
        "metarl.regularizers": {
            "nan-reg": "mid_run_mod:NaNRegularizer",
            "raising-reg": "mid_run_mod:RaisingRegularizer",
        },
    }
    yield from installed_distribution(
        tmp_path / "plugins", monkeypatch, "mid-run-plugins", entry_points, {"mid_run_mod": MID_RUN_MODULE}
    )


def _trainer(tmp_path: Path, **layer) -> tuple[Trainer, Path]:
    trainer = Trainer(build_config({"env": "navigation-2d", **TINY, **layer}, reference=True))
    return trainer, trainer.start_run(tmp_path)


# --- one writer -------------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    first, run_dir = _trainer(tmp_path, checkpoint_every=1)
    first.train(1)  # `train` releases the lock when it returns; `save` takes it again
    first.save()
    in_progress = run_dir / "checkpoints" / ".iter-000002.pt.x1.tmp"  # as the holder writes its next checkpoint
    in_progress.write_bytes(b"half")
    with pytest.raises(RunDirectoryInUse, match=rf"is in use by pid {os.getpid()} .*only one process may write"):
        resume_trainer(run_dir, warn=print)
    assert in_progress.exists()  # refused before it cleaned up anything
    in_progress.unlink()
    first.release_run_dir()
    second = resume_trainer(run_dir, warn=print)  # free again
    second.train(2)
    assert second.iteration == 2


def test_two_cli_resumes_one_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    assert (
        metarl("train", "--env", "navigation-2d", "--iterations", "1", "--logdir", str(tmp_path), *SMALL).returncode
        == 0
    )
    (run_dir,) = tmp_path.iterdir()
    holder = subprocess.Popen(
        [sys.executable, "-m", "metarl", "train", "--resume", str(run_dir), "--iterations", "1000", "--no-progress"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and str(holder.pid) not in (run_dir / LOCK_FILE).read_text():
            time.sleep(0.1)
        second = metarl("train", "--resume", str(run_dir), "--iterations", "1000", "--no-progress")
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert f"is in use by pid {holder.pid}" in line and "--iterations 1000" in line
    finally:
        holder.send_signal(signal.SIGKILL)  # no handler runs: the lock file keeps its holder
        holder.wait(timeout=60)
    third = metarl("train", "--resume", str(run_dir), "--iterations", "2", "--no-progress")
    assert third.returncode == 0, third.stderr
    assert f"taking over the lock of pid {holder.pid}" in third.stderr
    assert (run_dir / LOCK_FILE).read_text() == ""  # released at a normal exit


# --- overrides on resume ----------------------------------------------------------------------------


def test_resume_refuses_a_change_of_the_experiment(tmp_path):
    trainer, run_dir = _trainer(tmp_path)
    trainer.train(1)
    trainer.release_run_dir()
    for layer, key in [({"inner_lr": 0.5}, "inner_lr"), ({"algo_kwargs": {"max_kl": 0.02}}, "algo_kwargs"),
                       ({"env": "bandit"}, "env"), ({"seed": 3}, "seed")]:  # fmt: skip
        with pytest.raises(ConfigError, match=rf"config key '{key}' cannot change when a run resumes"):
            resume_trainer(run_dir, warn=print, layers=[layer], origins=["--set"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["algo_kwargs"]["max_kl"] == 0.01


def test_resume_honours_the_resumable_keys(tmp_path):
    trainer, run_dir = _trainer(tmp_path, checkpoint_every=1)
    trainer.train(1)
    trainer.release_run_dir()
    layer = {"iterations": 3, "loggers": ["csv", "tensorboard"], "checkpoint_every": 2, "inner_lr": 0.1}
    resumed = resume_trainer(run_dir, warn=print, layers=[layer], origins=["--set"])  # inner_lr unchanged: allowed
    assert (resumed.config.iterations, resumed.config.checkpoint_every) == (3, 2)
    resumed.train(resumed.config.iterations)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["loggers"] == ["csv", "tensorboard"] and saved["iterations"] == 3
    assert list(run_dir.glob("events.out.tfevents.*"))  # the logger added on resume ran
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("iter-*.pt")) == [
        "iter-000001.pt",
        "iter-000002.pt",
        "iter-000003.pt",
    ]


def test_cli_resume_with_a_changed_key_is_one_line(tmp_path):
    assert (
        metarl("train", "--env", "navigation-2d", "--iterations", "1", "--logdir", str(tmp_path), *SMALL).returncode
        == 0
    )
    (run_dir,) = tmp_path.iterdir()
    result = metarl("train", "--resume", str(run_dir), "--set", "inner_lr=0.5", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "metarl: error: config key 'inner_lr' cannot change when a run resumes (the run has 0.1, asked 0.5); "
        "on resume only these may change: iterations, checkpoint_every, eval_every, max_nonfinite_updates, "
        "loggers, logger_kwargs, num_workers, worker_timeout"
    )


# --- a plugin failing mid-run -------------------------------------------------------------------------


def test_a_family_failing_mid_run_is_named_and_a_checkpoint_is_written(tmp_path, mid_run_plugins):
    trainer, run_dir = _trainer(tmp_path, env="late-failing", checkpoint_every=10)
    with pytest.raises(PluginError) as caught:
        trainer.train(5)
    message = str(caught.value)
    assert message.startswith("env 'late-failing' (package mid-run-plugins) failed at iteration 3: RuntimeError: ")
    assert "task server unreachable; checkpoint of iteration 2 written; resume with: metarl train --resume" in message
    state = torch.load(run_dir / "checkpoints" / "iter-000002.pt", weights_only=True)
    assert state["iteration"] == 2


def test_an_env_observation_that_does_not_fit_its_space_names_the_family(tmp_path, mid_run_plugins):
    trainer, _ = _trainer(tmp_path, env="wide-observations")
    expected = (
        r"env of family WideFamily \(package mid-run-plugins\) for task \{'k': 0\} \(env 0\) "
        r"returned an observation of 3 values, but its observation space has 2"
    )
    with pytest.raises(PluginError, match=expected):
        trainer.train(1)


def test_a_regularizer_raising_mid_run_is_named(tmp_path, mid_run_plugins):
    trainer, _ = _trainer(tmp_path, regularizers={"raising-reg": 0.1})
    expected = (
        r"regularizer 'raising-reg' \(package mid-run-plugins\) failed at iteration 1: ValueError: the prior file"
    )
    with pytest.raises(PluginError, match=expected):
        trainer.train(1)


@pytest.mark.parametrize("algo", ["maml-trpo", "promp"])
def test_a_nan_loss_is_a_refused_update_and_stops_the_run(tmp_path, mid_run_plugins, algo):
    trainer, _ = _trainer(tmp_path, algo=algo, regularizers={"nan-reg": 0.1}, max_nonfinite_updates=2)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    with pytest.raises(MetarlError, match="stopped at iteration 2: 2 updates in a row were refused"):
        trainer.train(5)
    for name, p in trainer.policy.named_parameters():
        assert torch.equal(p, before[name]), name


def test_a_full_disk_mid_run_stops_with_the_resume_command(tmp_path, monkeypatch):
    trainer, run_dir = _trainer(tmp_path, checkpoint_every=1)
    real_log = CSVLogger.log

    def log(self, step, scalars):
        if step == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_log(self, step, scalars)

    monkeypatch.setattr(CSVLogger, "log", log)
    with pytest.raises(MetarlError) as caught:
        trainer.train(5)
    message = str(caught.value)
    assert "progress.csv" in message and "no space left on the device" in message
    assert message.endswith(f"resume with: metarl train --resume {run_dir}")
    assert torch.load(run_dir / "checkpoints" / "iter-000002.pt", weights_only=True)["iteration"] == 2
