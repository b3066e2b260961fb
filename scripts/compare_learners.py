"""Every installed meta-learner on the same task families with the same env-step budget.

    python scripts/compare_learners.py [--iterations-navigation 20] [--iterations-halfcheetah 15]

Each learner runs with its family's reference config (navigation-2d: 20 tasks × 20 episodes × 100 steps;
halfcheetah-dir here with 10 tasks × 10 episodes × 100 steps), the same seed and the same number of
iterations, hence the same number of environment steps. Prints the mean return before and after
adaptation over the last five iterations, and the wall-clock time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metarl import registry
from metarl.config import build_config
from metarl.trainer import Trainer

SETTINGS = {
    "navigation-2d": {},
    "halfcheetah-dir": {"meta_batch_size": 10, "fast_batch_size": 10, "horizon": 100},
}


def run(env: str, algo: str, iterations: int) -> tuple[float, float, float, float]:
    family = registry.envs.load(env)
    config = build_config(family.reference_config(), {**SETTINGS[env], "algo": algo, "seed": 1, "eval_every": 0})
    start = time.perf_counter()
    history = Trainer(config).train(iterations)
    seconds = time.perf_counter() - start
    before = np.mean([m["return/before_adaptation"] for m in history[-5:]])
    after = np.mean([m["return/after_adaptation"] for m in history[-5:]])
    steps = sum(m["perf/env_steps"] for m in history)
    return float(before), float(after), steps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations-navigation", type=int, default=20)
    parser.add_argument("--iterations-halfcheetah", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = {"navigation-2d": args.iterations_navigation, "halfcheetah-dir": args.iterations_halfcheetah}
    print("| env | learner | iterations | env steps | return before | return after | wall-clock s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for env, iterations in budgets.items():
        for algo in registry.algorithms.names():
            before, after, steps, seconds = run(env, algo, iterations)
            print(
                f"| {env} | {algo} | {iterations} | {steps:,.0f} | {before:.1f} | {after:.1f} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
