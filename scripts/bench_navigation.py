"""Time MAML-TRPO meta-iterations on navigation-2d and its sampler against Gymnasium's vector env.

Prints seconds per meta-iteration split into sampling, adaptation and outer step (with the exact
Fisher-vector products and with TRPO's subsampled ones, `cg_subsample`), and env steps per
second of one meta-batch rollout (20 tasks × 20 episodes × 100 steps) through
  (a) metarl's tensor fast path, (b) metarl's generic `make_env` path, (c) Gymnasium's SyncVectorEnv
  over the same 400 envs with one batched policy forward per step.

    python scripts/bench_navigation.py [--iterations 5] [--threads 2] [--cg-subsample 1.0 0.1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from metarl.config import build_config
from metarl.policies.batched import detach, stack
from metarl.sampling import GymVectorTaskEnv, make_vector_env, sample_episodes
from metarl.trainer import Trainer
from metarl_envs.navigation import Navigation2D, Navigation2DEnv


def time_iterations(iterations: int, subsamples: list[float]) -> None:
    """Median seconds per meta-iteration, split, for each `cg_subsample` (one trainer each, same seed)."""
    keys = ["perf/iteration_s", "perf/sampling_s", "perf/adaptation_s", "perf/outer_step_s", "perf/env_steps_per_s"]
    medians = {}
    for fraction in subsamples:
        config = build_config(Navigation2D.reference_config(), {"seed": 0, "cg_subsample": fraction, "eval_every": 0})
        trainer = Trainer(config)
        trainer.train(1)  # warm-up
        history = trainer.train(1 + iterations)
        medians[fraction] = {key: statistics.median(m[key] for m in history) for key in keys}
    print(
        f"MAML-TRPO navigation-2d, meta-batch {config.meta_batch_size} × {config.fast_batch_size} episodes "
        f"× horizon {config.horizon}, {iterations} iterations after one warm-up (median), by cg_subsample:"
    )
    print(f"  {'':<24}" + "".join(f"{f:>10g}" for f in subsamples))
    for key in keys:
        print(f"  {key:<24}" + "".join(f"{medians[f][key]:10.3f}" for f in subsamples))


def time_sampling(repeats: int) -> None:
    family = Navigation2D()
    tasks = family.sample_tasks(20, np.random.default_rng(0))
    policy = Trainer(build_config(Navigation2D.reference_config())).policy
    params = stack(detach(dict(policy.named_parameters())), len(tasks))
    device = torch.device("cpu")

    def metarl_rollout(env_factory) -> float:
        env = env_factory()
        start = time.perf_counter()
        episodes = sample_episodes(policy, params, env, 100, seed=0)
        return episodes.num_steps / (time.perf_counter() - start)

    def gymnasium_rollout() -> float:
        envs = gym.vector.SyncVectorEnv([lambda t=t: Navigation2DEnv(t) for t in tasks for _ in range(20)])
        obs, _ = envs.reset(seed=0)
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(100):
                actions = policy(torch.as_tensor(obs)).sample().numpy()
                obs, *_ = envs.step(actions)
        return 400 * 100 / (time.perf_counter() - start)

    rows = {
        "(a) metarl tensor fast path": lambda: metarl_rollout(lambda: make_vector_env(family, tasks, 20, device)),
        "(b) metarl generic make_env path": lambda: metarl_rollout(lambda: GymVectorTaskEnv(family, tasks, 20, device)),
        "(c) gymnasium SyncVectorEnv": gymnasium_rollout,
    }
    print(f"One meta-batch rollout, 20 tasks × 20 episodes × 100 steps, env steps per second (best of {repeats}):")
    for name, run in rows.items():
        print(f"  {name:<34} {max(run() for _ in range(repeats)):12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--cg-subsample", type=float, nargs="+", default=[1.0, 0.1], help="fractions of episodes in the Fisher products"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    time_sampling(args.repeats)
    time_iterations(args.iterations, args.cg_subsample)


if __name__ == "__main__":
    main()
