"""Meta-World's meta-learning benchmarks as metarl task families.

A task is `{"env_name": "reach-v3", "goal": k}`: the k-th of the goals Meta-World's benchmark object
draws for that environment in the family's split (50 per environment). ML1 families hold one
environment, and their train and test splits differ in goals; ML10 and ML45 hold several, and their
splits differ in environments. Goals are hidden from the observation, as in Meta-World's ML
benchmarks, and every step reports `info["success"]`, which metarl logs as a success rate.

Environments are expensive to build (a MuJoCo model per instance), so each family keeps the ones it
built and hands them out again with `set_task`; closing an env returns it to the family.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import gymnasium as gym
import metaworld
import numpy as np

from metarl.errors import ConfigError
from metarl.tasks import TaskDistribution

SPLITS = ("train", "test")
GOALS_PER_ENV = 50


class PooledEnv(gym.Wrapper):
    """A Meta-World env lent out by a family; `close` gives it back instead of destroying it."""

    def __init__(self, env: gym.Env, pool: list[gym.Env]) -> None:
        super().__init__(env)
        self._pool: list[gym.Env] | None = pool

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        # Meta-World's reset ignores `seed`; its own `seed` method reseeds the env's generators
        if seed is not None:
            self.env.unwrapped.seed(seed)
        return self.env.reset(options=options)

    def close(self) -> None:
        if self._pool is not None:  # a second close must not lend the env out twice
            self._pool.append(self.env)
            self._pool = None


class MetaWorldFamily(TaskDistribution):
    """Tasks of one Meta-World benchmark split.

    Keyword arguments (`env_kwargs`): `split` ("train" or "test") and `benchmark_seed`, the seed
    Meta-World draws the benchmark's goals with (fixed, so every run sees the same 50 goals per env).
    """

    max_episode_steps = 500  # Meta-World's own episode length (`max_path_length`)
    config_file = "configs/metaworld.yaml"
    split = "train"

    def __init__(self, split: str | None = None, benchmark_seed: int = 0) -> None:
        split = self.split if split is None else split
        if split not in SPLITS:
            raise ConfigError(f"env_kwargs.split: {split!r} is not one of {', '.join(SPLITS)}")
        self.split = split
        self.benchmark_seed = int(benchmark_seed)
        self._pools: dict[str, list[gym.Env]] = defaultdict(list)

    def make_benchmark(self) -> metaworld.Benchmark:
        raise NotImplementedError

    @functools.cached_property
    def _benchmark(self) -> metaworld.Benchmark:
        return self.make_benchmark()

    @functools.cached_property
    def env_classes(self) -> dict[str, type]:
        """The split's environments by name."""
        bench = self._benchmark
        return dict(bench.train_classes if self.split == "train" else bench.test_classes)

    @functools.cached_property
    def goals(self) -> dict[str, list[metaworld.Task]]:
        """The split's Meta-World tasks (goals) of each environment, in the benchmark's order."""
        bench = self._benchmark
        goals: dict[str, list[metaworld.Task]] = defaultdict(list)
        for task in bench.train_tasks if self.split == "train" else bench.test_tasks:
            goals[task.env_name].append(task)
        return dict(goals)

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """Environments in balanced random order (each appears once before any repeats), a random goal each."""
        names = sorted(self.env_classes)
        tasks = []
        for start in range(0, num_tasks, len(names)):
            for index in rng.permutation(len(names))[: num_tasks - start]:
                name = names[index]
                tasks.append({"env_name": name, "goal": int(rng.integers(len(self.goals[name])))})
        return tasks

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        name, goal = task.get("env_name"), task.get("goal")
        if name not in self.env_classes:
            known = ", ".join(sorted(self.env_classes))
            raise ConfigError(f"task env_name {name!r} is not in this {self.split} split; known: {known}")
        goals = self.goals[name]
        if not isinstance(goal, int) or not 0 <= goal < len(goals):
            raise ConfigError(f"task goal {goal!r} must be an integer in [0, {len(goals)})")
        pool = self._pools[name]
        env = pool.pop() if pool else self.env_classes[name]()
        env.set_task(goals[goal])
        return PooledEnv(env, pool)


class ML1(MetaWorldFamily):
    """One Meta-World environment; its train and test splits are disjoint sets of goals."""

    env_name: str

    def make_benchmark(self) -> metaworld.Benchmark:
        return metaworld.ML1(self.env_name, seed=self.benchmark_seed)


class ML10Train(MetaWorldFamily):
    """ML10's ten training environments."""

    def make_benchmark(self) -> metaworld.Benchmark:
        return metaworld.ML10(seed=self.benchmark_seed)


class ML10Test(ML10Train):
    """ML10's five held-out environments."""

    split = "test"


class ML45Train(MetaWorldFamily):
    """ML45's 45 training environments."""

    def make_benchmark(self) -> metaworld.Benchmark:
        return metaworld.ML45(seed=self.benchmark_seed)


class ML45Test(ML45Train):
    """ML45's five held-out environments."""

    split = "test"


def _ml1_family(env_name: str) -> type[ML1]:
    short = env_name.removesuffix("-v3")
    doc = f"Meta-World ML1 `{env_name}`: goals of one environment, train and test goals disjoint."
    return type(f"ML1_{short.replace('-', '_')}", (ML1,), {"env_name": env_name, "__doc__": doc})


# One class per Meta-World environment, named as the entry points in pyproject.toml refer to them
ML1_FAMILIES = {name: _ml1_family(name) for name in metaworld.ML1.ENV_NAMES}
globals().update({cls.__name__: cls for cls in ML1_FAMILIES.values()})
