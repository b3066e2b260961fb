"""Every installed meta-learner on the same task families with the same env-step budget.

    python scripts/compare_learners.py [--iterations-navigation 20] [--iterations-halfcheetah 15]
                                       [--algos NAME...] [--envs NAME...]

Each learner runs with its family's reference config (navigation-2d: 20 tasks × 20 episodes × 100 steps;
halfcheetah-dir here with 10 tasks × 10 episodes × 100 steps) and the same seed, until it has taken as
many environment steps as that many MAML-TRPO iterations take (train and validation episodes). RL²'s
iterations are smaller (one trial of two episodes per task), so it runs more of them. Prints the mean
return before and after adaptation over the last five iterations, and the wall-clock time.
"""

from __future__ import annotations

import argparse
import sys
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


def step_budget(env: str, iterations: int) -> int:
    """Env steps of `iterations` MAML iterations: train and validation episodes of every task."""
    family = registry.envs.load(env)
    config = build_config(family.reference_config(), SETTINGS[env])
    horizon = config.horizon_for(family)
    return iterations * 2 * config.meta_batch_size * config.fast_batch_size * horizon


def run(env: str, algo: str, budget: int) -> tuple[int, float, float, float, float]:
    family = registry.envs.load(env)
    config = build_config(family.reference_config(), {**SETTINGS[env], "algo": algo, "seed": 1, "eval_every": 0})
    trainer, steps = Trainer(config), [0.0]

    def stop_at_budget(iteration: int, metrics: dict[str, float]) -> None:
        steps[0] += metrics["perf/env_steps"]
        trainer.stop_requested = steps[0] >= budget
        if iteration % 10 == 0:  # some learners take an hour: show they are moving
            print(f"{env} {algo}: iteration {iteration}, {steps[0]:,.0f} of {budget:,} env steps", file=sys.stderr)

    start = time.perf_counter()
    history = trainer.train(10**9, stop_at_budget)
    seconds = time.perf_counter() - start
    before = np.mean([m["return/before_adaptation"] for m in history[-5:]])
    after = np.mean([m["return/after_adaptation"] for m in history[-5:]])
    return len(history), float(before), float(after), steps[0], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations-navigation", type=int, default=20)
    parser.add_argument("--iterations-halfcheetah", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algos", nargs="+", help="learners to run (default: every installed one)")
    parser.add_argument("--envs", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="task families")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    maml_iterations = {"navigation-2d": args.iterations_navigation, "halfcheetah-dir": args.iterations_halfcheetah}
    print("| env | learner | iterations | env steps | return before | return after | wall-clock s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for env in args.envs:
        for algo in args.algos or registry.algorithms.names():
            done, before, after, steps, seconds = run(env, algo, step_budget(env, maml_iterations[env]))
            print(
                f"| {env} | {algo} | {done} | {steps:,.0f} | {before:.1f} | {after:.1f} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
