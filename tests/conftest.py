"""Shared fixtures: a small navigation meta-batch and its policy."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import registry
from metarl.policies import GaussianMLP
from metarl.policies.batched import detach, stack
from metarl.sampling import Episodes, VectorTaskEnv, make_vector_env, sample_episodes
from metarl.sampling.advantages import compute_advantages
from metarl_envs.navigation import Navigation2D


def small_batch(num_tasks: int = 4, episodes: int = 5, horizon: int = 12, seed: int = 0):
    """A seeded navigation policy and one train batch with advantages, in float64."""
    torch.manual_seed(seed)
    family = Navigation2D()
    env0 = family.make_env({"goal": [0.0, 0.0]})
    policy = GaussianMLP(env0.observation_space, env0.action_space, hidden_sizes=[8, 8]).double()
    tasks = family.sample_tasks(num_tasks, np.random.default_rng(seed))
    env = make_vector_env(family, tasks, episodes, torch.device("cpu"))
    params = dict(policy.named_parameters())
    episodes_ = sample_episodes(policy, stack(detach(params), num_tasks), _DoubleEnv(env), horizon, seed)
    episodes_ = episodes_.with_advantages(compute_advantages(episodes_, 0.99, 1.0, normalize=True))
    return policy, family, tasks, episodes_


class _DoubleEnv(VectorTaskEnv):
    """Wraps a VectorTaskEnv so observations come out in float64 (for finite differences)."""

    def __init__(self, env):
        self.env = env

    def reset(self, seed: int) -> torch.Tensor:
        return self.env.reset(seed).double()

    def step(self, actions: torch.Tensor):
        obs, reward, done = self.env.step(actions.float())
        return obs.double(), reward.double(), done


@pytest.fixture
def one_torch_thread():
    """Many tiny ops: on a busy machine, intra-op threads cost far more than they gain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def batch() -> tuple:
    return small_batch()


def episodes_like(episodes: Episodes, **changes) -> Episodes:
    fields = {k: getattr(episodes, k) for k in ("observations", "actions", "rewards", "mask", "advantages")}
    return Episodes(**{**fields, **changes})


def installed_distribution(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str],
) -> Iterator[None]:
    """A fixture body: `write_distribution` into `root`, put it on sys.path and make every registry see
    it; afterwards its modules are forgotten and the registries rediscover what is really installed."""
    root.mkdir(parents=True)
    write_distribution(root, name, entry_points, modules)
    monkeypatch.syspath_prepend(str(root))
    for reg in registry.REGISTRIES.values():
        reg.reload()
    yield
    for module in modules:
        sys.modules.pop(module, None)
    for reg in registry.REGISTRIES.values():
        reg.reload()


def write_distribution(root: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """A fake installed distribution `name` 0.1 in `root`, with its entry points and top-level modules."""
    dist_info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    sections = [
        "\n".join([f"[{group}]", *(f"{key} = {target}" for key, target in entries.items())])
        for group, entries in entry_points.items()
    ]
    (dist_info / "entry_points.txt").write_text("\n\n".join(sections) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
