"""Exact resume, safe interruption, corrupted and foreign checkpoints, non-finite updates."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import SMALL, metarl

from metarl import registry
from metarl.config import build_config
from metarl.errors import MetarlError
from metarl.trainer import Trainer
from metarl_envs.navigation import Navigation2D


def _only_run(logdir: Path) -> Path:
    (run,) = logdir.iterdir()
    return run


def _column(run: Path, name: str) -> list[str]:
    rows = (run / "progress.csv").read_text().splitlines()
    index = rows[0].split(",").index(name)
    return [r.split(",")[index] for r in rows[1:]]


def _params(run: Path, iteration: int) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / f"iter-{iteration:06d}.pt", weights_only=True)["policy"]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    common = ["train", "--env", "navigation-2d", "--seed", "3", *SMALL, "--set", "checkpoint_every=1"]
    assert metarl(*common, "--iterations", "6", "--logdir", str(tmp_path / "full")).returncode == 0
    assert metarl(*common, "--iterations", "3", "--logdir", str(tmp_path / "split")).returncode == 0
    split = _only_run(tmp_path / "split")
    # As if killed after logging iteration 3 but before its checkpoint: the resume starts after 2.
    (split / "checkpoints" / "iter-000003.pt").unlink()
    resumed = metarl("train", "--resume", str(split), "--iterations", "6", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    full = _only_run(tmp_path / "full")
    for column in ("return/before_adaptation", "return/after_adaptation", "train/kl"):
        assert _column(split, column) == _column(full, column), column
    assert _column(split, "iteration") == ["1", "2", "3", "4", "5", "6"]  # iteration 3 logged once
    events = EventAccumulator(str(split))
    events.Reload()
    logged = events.Scalars("return/after_adaptation")
    assert [e.step for e in logged] == [1, 2, 3, 4, 5, 6]
    assert [f"{e.value:.4f}" for e in logged] == [f"{float(v):.4f}" for v in _column(full, "return/after_adaptation")]
    for name, value in _params(full, 6).items():
        assert torch.equal(value, _params(split, 6)[name]), name


def _start_long_run(logdir: Path, checkpoint_every: str, stderr: int) -> subprocess.Popen:
    """A small navigation run of many iterations in the background, to be interrupted."""
    command = [sys.executable, "-m", "metarl", "train", "--env", "navigation-2d", "--iterations", "1000"]
    return subprocess.Popen(
        [*command, "--logdir", str(logdir), *SMALL, "--set", checkpoint_every], stderr=stderr, text=True
    )


@pytest.mark.slow
def test_sigterm_stops_with_checkpoint_and_resume_hint(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metarl",
            "train",
            "--env",
            "navigation-2d",
            "--iterations",
            "1000",
            "--logdir",
            str(tmp_path),
            *SMALL,
            "--set",
            "checkpoint_every=1000",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/progress.csv")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "resume with: metarl train --resume" in stderr
    run = _only_run(tmp_path)
    (checkpoint,) = (run / "checkpoints").glob("iter-*.pt")  # written at the stop, not by checkpoint_every
    assert torch.load(checkpoint, weights_only=True)["iteration"] >= 1
    assert not list(run.rglob("*.tmp"))


def test_sigkill_never_leaves_a_partial_checkpoint(tmp_path):
    process = _start_long_run(tmp_path, "checkpoint_every=1", stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("*/checkpoints/iter-*.pt"))) < 3:
        time.sleep(0.05)
    process.kill()  # SIGKILL: no handler runs
    process.wait(timeout=60)
    run = _only_run(tmp_path)
    checkpoints = sorted((run / "checkpoints").glob("iter-*.pt"))
    assert len(checkpoints) >= 3
    for path in checkpoints:  # every file that has a checkpoint's name is a whole checkpoint
        assert torch.load(path, weights_only=True)["iteration"] == int(path.stem.split("-")[1])
    (run / "checkpoints" / ".iter-999999.pt.abc.tmp").write_bytes(b"torn")  # as if killed mid-write
    result = metarl("train", "--resume", str(run), "--iterations", str(len(checkpoints) + 1), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "removing .iter-999999.pt.abc.tmp" in result.stderr
    assert not list(run.rglob("*.tmp"))


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path):
    args = ["train", "--env", "navigation-2d", "--iterations", "2", "--logdir", str(tmp_path), *SMALL]
    assert metarl(*args, "--set", "checkpoint_every=1").returncode == 0
    run = _only_run(tmp_path)
    newest = run / "checkpoints" / "iter-000002.pt"
    newest.write_bytes(newest.read_bytes()[:200])  # a torn write from another tool
    result = metarl("train", "--resume", str(run), "--iterations", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "skipping unreadable checkpoint" in result.stderr and "iter-000002.pt" in result.stderr
    assert torch.load(run / "checkpoints" / "iter-000003.pt", weights_only=True)["iteration"] == 3


@pytest.mark.slow
def test_foreign_and_incompatible_checkpoints_are_refused(tmp_path):
    args = ["train", "--iterations", "1", "--no-progress", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2"]
    assert metarl(*args, "--env", "navigation-2d", "--logdir", str(tmp_path / "nav")).returncode == 0
    assert metarl(*args, "--env", "bandit", "--logdir", str(tmp_path / "bandit")).returncode == 0
    nav, bandit = _only_run(tmp_path / "nav"), _only_run(tmp_path / "bandit")
    checkpoint = nav / "checkpoints" / "iter-000001.pt"
    (bandit / "checkpoints" / "iter-000001.pt").write_bytes(checkpoint.read_bytes())
    result = metarl("train", "--resume", str(bandit))
    assert result.returncode == 2 and "checkpoint is for env 'navigation-2d', not 'bandit'" in result.stderr

    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "format": 99, "metarl_version": "9.0"}, checkpoint)
    result = metarl("train", "--resume", str(nav))
    assert result.returncode == 2 and "format 99" in result.stderr and "Traceback" not in result.stderr

    torch.save(state, checkpoint)
    config = yaml.safe_load((nav / "config.yaml").read_text())
    config["policy_kwargs"]["hidden_sizes"] = [32, 32]
    (nav / "config.yaml").write_text(yaml.safe_dump(config))
    result = metarl("train", "--resume", str(nav))
    assert result.returncode == 2 and "does not fit this policy" in result.stderr


class _NaNNavigation(Navigation2D):
    """Navigation whose rewards turn NaN: every update must be refused."""

    config_file = None

    def make_vector_env(self, tasks, episodes_per_task, device):
        env = super().make_vector_env(tasks, episodes_per_task, device)
        step = env.step

        def nan_step(actions):
            obs, reward, done = step(actions)
            return obs, reward * float("nan"), done

        env.step = nan_step
        return env


def test_non_finite_updates_are_refused_then_stop(monkeypatch):
    registry.envs.register("nan-navigation", _NaNNavigation, override=True)
    config = build_config(
        {"env": "nan-navigation", "meta_batch_size": 2, "fast_batch_size": 2, "horizon": 5, "max_nonfinite_updates": 3}
    )
    trainer = Trainer(config)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    history = []
    with pytest.raises(MetarlError, match="3 updates in a row were refused"):
        trainer.train(10, on_iteration=lambda i, m: history.append(m))
    assert len(history) == 3 and all(m["train/non_finite"] == 1.0 for m in history)
    assert all(torch.equal(before[n], p) for n, p in trainer.policy.named_parameters())
    assert np.isnan(history[0]["train/surrogate_before"])
