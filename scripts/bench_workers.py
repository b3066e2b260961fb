"""Env steps per second of the generic `make_env` path: metarl's worker sampler against Gymnasium's vector envs.

One meta-batch of `--tasks` × `--episodes` envs of a family, `--steps` steps from a reset, one batched
policy forward per step (each task with its own parameters, as in training), timed from the reset on:

(a) metarl's generic path: in this process (`num_workers: 1`) and in 2, 4, … worker processes
(b) Gymnasium `SyncVectorEnv` and `AsyncVectorEnv(shared_memory=True)` (one process per env) over the
    same `make_env` envs, with the same policy forward
(c) metarl's fast path (`make_vector_env`), where the family has one
(d) what the cores give: the same meta-batch split by task among W independent processes, each
    stepping its part in process with its own policy forward, no exchange; all steps over the
    slowest one's time. On a machine whose cores slow each other down (shared caches, a VM's
    vCPUs) this is below W × the in-process rate, and no sampler can beat it

Families: `pendulum` (Pendulum-v1 with a sampled gravity, a task distribution defined here: the cheap
env, where the per-step overhead shows), any registered family by name, e.g. `halfcheetah-vel` (its
generic path and its `mujoco.rollout` fast path) and, in the Meta-World plugin's venv,
`metaworld-ml1-reach`.

  python scripts/bench_workers.py [--families pendulum halfcheetah-vel] [--workers 1 2 4]
                                  [--tasks 8] [--episodes 8] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl import distributed, registry
from metarl.policies import GaussianMLP
from metarl.policies.batched import detach, sample_actions, stack
from metarl.sampling import sample_episodes
from metarl.sampling.vector_env import GymVectorTaskEnv
from metarl.sampling.workers import WorkerPool
from metarl.tasks import TaskDistribution, VectorTaskEnv


class PendulumGravity(TaskDistribution):
    """Gymnasium's Pendulum-v1 with the gravity of each task drawn from U(5, 15)."""

    max_episode_steps = 200

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"g": float(g)} for g in rng.uniform(5.0, 15.0, size=num_tasks)]

    def make_env(self, task: dict[str, Any]) -> gym.Env:
        return gym.make("Pendulum-v1", g=task["g"])


class Bench:
    """One family's meta-batch, its policy and its per-task parameters."""

    def __init__(self, name: str, num_tasks: int, episodes: int, steps: int) -> None:
        self.family = PendulumGravity() if name == "pendulum" else registry.envs.load(name)()
        self.tasks = self.family.sample_tasks(num_tasks, np.random.default_rng(0))
        self.episodes, self.steps = episodes, steps
        probe = self.family.make_env(self.tasks[0])
        self.policy = GaussianMLP(probe.observation_space, probe.action_space)
        probe.close()
        self.params = stack(detach(dict(self.policy.named_parameters())), num_tasks)

    @property
    def num_envs(self) -> int:
        return len(self.tasks) * self.episodes

    def metarl(self, env: VectorTaskEnv) -> float:
        """Env steps per second of `sample_episodes` over `env` (a warm-up batch first)."""
        sample_episodes(self.policy, self.params, env, min(self.steps, 5), seed=0)
        start = time.perf_counter()
        episodes = sample_episodes(self.policy, self.params, env, self.steps, seed=0)
        elapsed = time.perf_counter() - start
        env.close()
        return episodes.num_steps / elapsed

    def gymnasium(self, make: Callable[[list[Callable[[], gym.Env]]], gym.vector.VectorEnv]) -> float:
        """Env steps per second of a Gymnasium vector env over the same envs and policy forward."""
        family = self.family
        factories = [lambda t=t: family.make_env(t) for t in self.tasks for _ in range(self.episodes)]
        envs = make(factories)
        try:
            envs.reset(seed=0)
            envs.step(envs.action_space.sample())  # warm-up
            start = time.perf_counter()
            obs, _ = envs.reset(seed=0)
            with torch.no_grad():
                for _ in range(self.steps):
                    grouped = torch.as_tensor(obs, dtype=torch.float32).view(len(self.tasks), self.episodes, -1)
                    actions = sample_actions(self.policy, self.params, grouped)
                    obs, *_ = envs.step(actions.reshape(self.num_envs, -1).numpy())
            return self.num_envs * self.steps / (time.perf_counter() - start)
        finally:
            envs.close()

    def rates(self, worker_counts: list[int]) -> dict[str, float]:
        cpu = torch.device("cpu")
        rates: dict[str, float] = {}
        for count in worker_counts:
            if count == 1:
                rates["(a) metarl generic, 1 process (num_workers 1)"] = self.metarl(
                    GymVectorTaskEnv(self.family, self.tasks, self.episodes, cpu)
                )
                continue
            pool = WorkerPool(count, timeout=600.0)
            try:
                rates[f"(a) metarl generic, {count} workers"] = self.metarl(
                    pool.vector_env(self.family, self.tasks, self.episodes, cpu)
                )
            finally:
                pool.close()
        rates["(b) gymnasium SyncVectorEnv"] = self.gymnasium(gym.vector.SyncVectorEnv)
        rates[f"(b) gymnasium AsyncVectorEnv, {self.num_envs} procs"] = self.gymnasium(
            lambda factories: gym.vector.AsyncVectorEnv(factories, shared_memory=True)
        )
        fast = self.family.make_vector_env(self.tasks, self.episodes, cpu)
        if fast is not None:
            rates["(c) metarl fast path"] = self.metarl(fast)
        for count in worker_counts:
            if count > 1:
                rates[f"(d) {count} independent processes, no exchange"] = self.independent(count)
        return rates

    def independent(self, count: int) -> float:
        """All env steps of `count` forked processes, each stepping `tasks / count` tasks in process
        from a common start, over the slowest one's time."""
        ctx = mp.get_context("fork")
        start, times = ctx.Barrier(count), ctx.SimpleQueue()
        parts = [self.tasks[len(self.tasks) * k // count : len(self.tasks) * (k + 1) // count] for k in range(count)]
        processes = [ctx.Process(target=self._timed_part, args=(part, start, times)) for part in parts]
        for process in processes:
            process.start()
        results = [times.get() for _ in processes]
        for process in processes:
            process.join()
        return sum(steps for steps, _ in results) / max(seconds for _, seconds in results)

    def _timed_part(self, tasks: list[dict[str, Any]], start: Any, times: Any) -> None:
        env = GymVectorTaskEnv(self.family, tasks, self.episodes, torch.device("cpu"))
        params = {name: p[: len(tasks)] for name, p in self.params.items()}
        sample_episodes(self.policy, params, env, min(self.steps, 5), seed=0)
        start.wait()
        began = time.perf_counter()
        episodes = sample_episodes(self.policy, params, env, self.steps, seed=0)
        times.put((episodes.num_steps, time.perf_counter() - began))
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["pendulum", "halfcheetah-vel"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="the best of this many measurements is shown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"gymnasium {gym.__version__}, torch {torch.__version__}, {distributed.available_cores()} cores, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{args.tasks} tasks × {args.episodes} episodes × {args.steps} steps, env steps per second (best of "
        f"{args.repeats}):"
    )
    results: dict[str, dict[str, float]] = {}
    for name in args.families:
        bench = Bench(name, args.tasks, args.episodes, args.steps)
        runs = [bench.rates(args.workers) for _ in range(args.repeats)]
        results[name] = {row: max(run[row] for run in runs) for row in runs[0]}
    rows = sorted({row for rates in results.values() for row in rates})
    print(f"  {'sampler':<42}" + "".join(f"{name:>22}" for name in results))
    for row in rows:
        cells = [f"{rates[row]:>22,.0f}" if row in rates else f"{'–':>22}" for rates in results.values()]
        print(f"  {row:<42}" + "".join(cells))


if __name__ == "__main__":
    main()
