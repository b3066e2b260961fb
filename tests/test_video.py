"""`metarl evaluate --video`: before/after-adaptation episodes side by side in a GIF."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.algos.held_out import AdaptationResult, evaluate_adaptation
from metarl.config import build_config
from metarl.errors import MetarlError
from metarl.policies import GaussianMLP
from metarl.policies.batched import detach, stack
from metarl.trainer import Trainer
from metarl.video import HEADER, PANEL, compose, write_adaptation_video
from metarl_envs.bandit import BernoulliBandit
from metarl_envs.mujoco import HalfCheetahVel
from metarl_envs.navigation import Navigation2D

HORIZON = 20


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as image:
        frames = []
        for i in range(image.n_frames):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
    return frames


def test_navigation_video_shows_each_task_before_and_after(tmp_path):
    small = {"meta_batch_size": 2, "fast_batch_size": 4, "horizon": HORIZON, "hidden_sizes": [16, 16]}
    trainer = Trainer(build_config(Navigation2D.reference_config(), small))
    tasks = [{"goal": [0.4, 0.3]}, {"goal": [-0.3, 0.2]}, {"goal": [0.1, -0.45]}]
    result = evaluate_adaptation(trainer.policy, trainer.family, trainer.config, tasks, 1, 4, 0, trainer.device)
    path = write_adaptation_video(trainer.policy, trainer.family, result, 2, HORIZON, tmp_path / "a.gif", seed=0)
    frames = gif_frames(path)
    assert frames[0].shape == (HEADER + 2 * PANEL, 2 * PANEL, 3)  # 2 tasks × (before, after)
    assert 2 <= len(frames) <= HORIZON + 1
    assert not np.array_equal(frames[0], frames[-1])  # the trajectories grow
    last = frames[-1]
    for row in range(2):
        panels = last[HEADER + row * PANEL : HEADER + (row + 1) * PANEL]
        assert not np.array_equal(panels[:, :PANEL], panels[:, PANEL:])  # adaptation changed the episode


def test_compose_holds_the_last_frame_of_a_short_episode():
    short = [np.full((PANEL, PANEL, 3), 10, np.uint8)]
    long = [np.full((PANEL, PANEL, 3), v, np.uint8) for v in (20, 30, 40)]
    frames = compose([(short, long)], ["before", "after"])
    assert len(frames) == 3
    assert all((f[HEADER:, :PANEL] == 10).all() for f in frames)
    assert [int(f[HEADER, PANEL, 0]) for f in frames] == [20, 30, 40]


def test_mujoco_video_renders_offscreen(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))  # restored after the test
    family = HalfCheetahVel()
    task = {"velocity": 1.0}
    env = family.make_env(task)
    policy = GaussianMLP(env.observation_space, env.action_space, hidden_sizes=[8])
    torch.manual_seed(0)
    params = detach(dict(policy.named_parameters()))
    adapted = stack({name: p + torch.randn_like(p) for name, p in params.items()}, 1)
    result = AdaptationResult([task], np.zeros((1, 2)), adapted)
    try:
        path = write_adaptation_video(policy, family, result, 1, 5, tmp_path / "cheetah.gif", seed=0)
    except MetarlError as exc:
        if "headless OpenGL" in str(exc):
            pytest.skip(str(exc))
        raise
    frames = gif_frames(path)
    assert frames[0].shape == (HEADER + PANEL, 2 * PANEL, 3)
    assert 2 <= len(frames) <= 6
    assert not np.array_equal(frames[-1][HEADER:, :PANEL], frames[-1][HEADER:, PANEL:])


def test_family_without_renderer_is_a_user_error(tmp_path):
    family = BernoulliBandit()
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    result = AdaptationResult([task], np.zeros((1, 1)), {})
    with pytest.raises(MetarlError, match="cannot render task family BernoulliBandit"):
        write_adaptation_video(torch.nn.Linear(1, 1), family, result, 1, 1, tmp_path / "b.gif", seed=0)
