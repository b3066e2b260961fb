"""`metarl evaluate --video`: per held-out task, one episode before adaptation and one after K inner
steps, side by side (a row per task), as an animated GIF.

Actions are the policy's mode (mean or most likely action), so the video shows what each parameter
set does rather than sampling noise. Frames come from the env that the family's `video_env` hook builds
(navigation-2d draws with matplotlib; the MuJoCo families render offscreen through their Gymnasium v5
env, `MUJOCO_GL`, EGL unless set).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.algos.held_out import AdaptationResult
from metarl.checkpoint import atomic_write
from metarl.errors import MetarlError
from metarl.policies.batched import Params, detach, distribution, unstack
from metarl.tasks import TaskDistribution

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

PANEL = 200  # pixels per side of one episode's panel
HEADER = 20  # pixels of the label row above the panels
FPS = 20

Capture = Callable[[gym.Env, Any], Any]
Episode = Callable[[gym.Env, Params, Capture], list[Any]]
Frames = list[np.ndarray]


def _rollout(env: gym.Env, policy: nn.Module, params: Params, horizon: int, seed: int, capture: Capture) -> list[Any]:
    """One episode with the policy's mode action; `capture(env, obs)` after the reset and every step."""
    device = next(iter(params.values())).device
    obs, _ = env.reset(seed=seed)
    captured = [capture(env, obs)]
    for _ in range(horizon):
        with torch.no_grad():
            flat = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1), device=device)
            mode = distribution(policy, params, flat).mode.cpu().numpy()
        action: np.ndarray | int
        if isinstance(env.action_space, gym.spaces.Box):
            action = np.clip(mode.reshape(env.action_space.shape), env.action_space.low, env.action_space.high)
        else:
            action = int(mode)
        obs, _, terminated, truncated, _ = env.step(action)
        captured.append(capture(env, obs))
        if terminated or truncated:
            break
    return captured


def _render(env: gym.Env, obs: Any) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as exc:  # mujoco and PyOpenGL raise many types when no GL context can be made
        raise MetarlError(
            f"offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
            f"{type(exc).__name__}: {exc}. --video needs headless OpenGL for MuJoCo: install EGL (libegl1) or "
            "OSMesa (libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa"
        ) from None
    if not isinstance(frame, np.ndarray):
        raise MetarlError(
            f"--video: the env from `video_env` rendered {type(frame).__name__}, not an RGB array "
            "(it needs render_mode='rgb_array')"
        )
    return frame


def _episode_frames(family: TaskDistribution, task: dict[str, Any], episode: Episode, params: Params) -> Frames:
    """One episode's frames, rendered by the env the family's `video_env` hook builds."""
    env = family.video_env(task, PANEL)
    if env is None:
        raise MetarlError(f"--video cannot render task family {type(family).__name__}: its `video_env` returned None")
    try:
        return episode(env, params, _render)
    finally:
        env.close()


def _label_row(labels: list[str]) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PANEL * len(labels), HEADER), "white")
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(labels):
        draw.text((i * PANEL + 6, 4), label, fill="black")
    return np.asarray(image)


def compose(pairs: list[tuple[Frames, Frames]], labels: list[str]) -> Frames:
    """Video frames: a label row, then per task its before and after panels; a finished episode holds
    its last frame until the longest one ends."""
    length = max(len(frames) for pair in pairs for frames in pair)
    header = _label_row(labels)
    return [
        np.concatenate(
            [header, *(np.concatenate([b[min(t, len(b) - 1)], a[min(t, len(a) - 1)]], axis=1) for b, a in pairs)]
        )
        for t in range(length)
    ]


def save_gif(frames: Frames, path: Path, fps: int = FPS) -> Path:
    """An endlessly looping GIF of `frames` (uint8 RGB), written atomically."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    atomic_write(path, buffer.getvalue())
    return path


def write_adaptation_video(
    policy: nn.Module,
    family: TaskDistribution,
    result: AdaptationResult,
    num_tasks: int,
    horizon: int,
    path: Path,
    seed: int,
    writer: SummaryWriter | None = None,
) -> Path:
    """The GIF at `path` for the first `num_tasks` tasks of `result`: before adaptation (the policy's
    own parameters) and after its K steps (`result.adapted_params`). With a `writer`, its last frame is
    logged to TensorBoard as an image (`add_video` would need moviepy)."""
    if type(family).video_env is TaskDistribution.video_env:
        raise MetarlError(
            f"--video cannot render task family {type(family).__name__}: it has no `video_env` "
            "(navigation-2d and the MuJoCo families have one)"
        )
    initial = detach(dict(policy.named_parameters()))

    def episode(env: gym.Env, params: Params, capture: Capture) -> list[Any]:
        return _rollout(env, policy, params, horizon, seed, capture)

    tasks = result.tasks[:num_tasks]
    pairs = [
        (_episode_frames(family, task, episode, initial), _episode_frames(family, task, episode, adapted))
        for task, adapted in zip(tasks, unstack(result.adapted_params))
    ]
    inner_steps = result.returns.shape[1] - 1
    after = f"after {inner_steps} inner step" + ("s" if inner_steps != 1 else "")
    frames = compose(pairs, ["before adaptation", after])
    save_gif(frames, path)
    if writer is not None:
        writer.add_image("evaluation/adaptation_video_last_frame", frames[-1], dataformats="HWC")
    return path
