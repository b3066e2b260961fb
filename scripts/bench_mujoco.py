"""Env steps per second of one MuJoCo meta-batch (40 tasks × 20 episodes) through four samplers.

(a) metarl's batched `mujoco.rollout` path (`sample_episodes`, one batched policy forward per step)
(b) Gymnasium SyncVectorEnv over the same 800 `make_env` envs, one policy forward per step
(c) Gymnasium AsyncVectorEnv with one env per core (one worker process each), one policy forward
    per step; 800 worker processes would not fit in memory
(d) the physical limit: all steps of all 800 episodes in a single `mujoco.rollout` call on all
    cores (mj_step × frame_skip, no Python, no observations or rewards)

  python scripts/bench_mujoco.py [--steps 50] [--families halfcheetah-vel ant-dir]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import rollout

from metarl import distributed, registry
from metarl.policies import GaussianMLP
from metarl.policies.batched import detach, stack
from metarl.sampling import sample_episodes
from metarl.tasks import TaskDistribution

NUM_TASKS, EPISODES = 40, 20
CORES = distributed.available_cores()


def metarl_path(family: TaskDistribution, tasks: list[dict], policy: GaussianMLP, steps: int) -> float:
    env = family.make_vector_env(tasks, EPISODES, torch.device("cpu"))
    params = stack(detach(dict(policy.named_parameters())), len(tasks))
    start = time.perf_counter()
    episodes = sample_episodes(policy, params, env, steps, seed=0)
    return episodes.num_steps / (time.perf_counter() - start)


def gymnasium_path(envs: gym.vector.VectorEnv, policy: GaussianMLP, steps: int) -> float:
    obs, _ = envs.reset(seed=0)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            actions = policy(torch.as_tensor(obs, dtype=torch.float32)).sample().numpy()
            obs, *_ = envs.step(actions)
    elapsed = time.perf_counter() - start
    envs.close()
    return envs.num_envs * steps / elapsed


def physical_limit(family: TaskDistribution, tasks: list[dict], steps: int) -> float:
    envs = [family.make_env(task) for task in tasks]
    models = [env.model for env in envs for _ in range(EPISODES)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
    states = np.empty((len(models), mujoco.mj_stateSize(models[0], spec)))
    for i, state in enumerate(states):
        env = envs[i // EPISODES]
        env.reset(seed=i)
        mujoco.mj_getState(env.model, env.data, state, spec)
    controls = np.random.default_rng(0).uniform(-1, 1, size=(len(models), 1, models[0].nu))
    datas = [mujoco.MjData(models[0]) for _ in range(CORES)]
    nstep = envs[0].frame_skip * steps
    with rollout.Rollout(nthread=CORES) as pool:
        start = time.perf_counter()
        pool.rollout(models, datas, states, controls, nstep=nstep)
        return len(models) * steps / (time.perf_counter() - start)


def bench(name: str, steps: int) -> dict[str, float]:
    family = registry.envs.load(name)()
    tasks = family.sample_tasks(NUM_TASKS, np.random.default_rng(0))
    first = family.make_env(tasks[0])
    policy = GaussianMLP(first.observation_space, first.action_space)
    # AsyncVectorEnv's envs are built in the workers; factories must be picklable (module-level family).
    factories: list[Callable[[], gym.Env]] = [lambda t=t: family.make_env(t) for t in tasks for _ in range(EPISODES)]
    return {
        "(a) metarl mujoco.rollout path": metarl_path(family, tasks, policy, steps),
        "(b) gymnasium SyncVectorEnv": gymnasium_path(gym.vector.SyncVectorEnv(factories), policy, steps),
        f"(c) gymnasium AsyncVectorEnv, {CORES} envs": gymnasium_path(
            gym.vector.AsyncVectorEnv(factories[:: len(factories) // CORES][:CORES]), policy, steps
        ),
        "(d) mujoco.rollout physical limit": physical_limit(family, tasks, steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--families", nargs="+", default=["halfcheetah-vel", "ant-dir"])
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    print(
        f"mujoco {mujoco.__version__}, gymnasium {gym.__version__}, torch {torch.__version__}, {CORES} cores, "
        f"{args.torch_threads} torch threads, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{NUM_TASKS} tasks × {EPISODES} episodes × {args.steps} steps, env steps per second:")
    results = {name: bench(name, args.steps) for name in args.families}
    rows = next(iter(results.values())).keys()
    print(f"  {'sampler':<38}" + "".join(f"{name:>18}" for name in results))
    for row in rows:
        print(f"  {row:<38}" + "".join(f"{results[name][row]:>18,.0f}" for name in results))


if __name__ == "__main__":
    main()
