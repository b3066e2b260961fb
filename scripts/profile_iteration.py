"""Where one meta-iteration's time goes: sampling (rollouts, advantages), adaptation and the outer
step's parts (gradient, conjugate gradient on Fisher-vector products, line search), from the
torch profiler's `record_function` ranges that the learners mark.

Defaults: MAML-TRPO on halfcheetah-dir with the ProMP protocol (horizon 100, actions ÷ 10, 40 tasks
× 20 episodes: 160,000 env steps per iteration).

    python scripts/profile_iteration.py [--env halfcheetah-dir] [--algo maml-trpo] [--iterations 3]
        [--threads 2] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from metarl.config import build_config, parse_set
from metarl.metrics import ADAPTATION_S, ITERATION_S, OUTER_STEP_S, SAMPLING_S
from metarl.trainer import Trainer

PROMP_PROTOCOL = ["horizon=100", "env_kwargs.action_scale=10"]
RANGES = (
    "sampling/rollout",
    "sampling/advantages",
    "outer/gradient",
    "outer/conjugate_gradient",
    "outer/line_search",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="halfcheetah-dir")
    parser.add_argument("--algo", default="maml-trpo")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layer = {"env": args.env, "algo": args.algo, "seed": 1, "eval_every": 0}
    trainer = Trainer(build_config(layer, parse_set(PROMP_PROTOCOL if args.set is None else args.set), reference=True))
    trainer.train(1)  # warm-up
    per_range: dict[str, list[float]] = defaultdict(list)
    history = []
    for iteration in range(args.iterations):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            history += trainer.train(2 + iteration)
        totals: dict[str, float] = defaultdict(float)
        for event in prof.events():
            if event.name in RANGES:
                totals[event.name] += event.cpu_time_total / 1e6
        for name in RANGES:
            per_range[name].append(totals[name])
    c = trainer.config
    print(
        f"{args.algo} on {args.env}: {c.meta_batch_size} tasks × {c.fast_batch_size} episodes × horizon "
        f"{c.horizon_for(trainer.family)}, {args.threads} torch threads, median of {args.iterations} iterations "
        f"after a warm-up ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    rows = [
        ("iteration", ITERATION_S),
        ("  sampling (train + validation)", SAMPLING_S),
        ("  adaptation (inner step)", ADAPTATION_S),
        ("  outer step", OUTER_STEP_S),
    ]
    for label, key in rows:
        print(f"  {label:<40}{statistics.median(m[key] for m in history):8.3f} s")
    print("  profiler ranges (in sampling / outer step):")
    for name in RANGES:
        print(f"    {name:<38}{statistics.median(per_range[name]):8.3f} s")
    ratio = statistics.median(m[OUTER_STEP_S] / m[SAMPLING_S] for m in history)
    print(f"  outer step / sampling: {ratio:.0%}")


if __name__ == "__main__":
    main()
