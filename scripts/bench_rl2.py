"""Time RL² iterations with sb3-contrib's own LSTM policy against metarl's whole-sequence one.

sb3-contrib's `MlpLstmPolicy` steps its LSTMs one time step at a time in Python during PPO's update
whenever a batch holds an episode start; `metarl.algos.rl2` runs each sequence in one LSTM call
(`_lstm_over_sequences`). Both train from the same seed for the same iterations, one after the
other in this process, so the script also prints how far apart their final weights are.

    python scripts/bench_rl2.py [--envs navigation-2d halfcheetah-dir] [--iterations 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from unittest import mock

import torch

from metarl import registry
from metarl.algos import rl2
from metarl.config import build_config
from metarl.trainer import Trainer

KEYS = ["perf/iteration_s", "perf/sampling_s", "perf/env_steps_per_s"]


def sb3_contrib_policy_class() -> type:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    return RecurrentActorCriticPolicy


def run(env: str, iterations: int, policy_class: Callable[[], type]) -> tuple[dict[str, float], torch.Tensor]:
    """Median metrics over `iterations` after one warm-up, and the final weights flattened."""
    family = registry.envs.load(env)
    config = build_config(family.reference_config(), {"algo": "rl2", "seed": 0, "eval_every": 0})
    with mock.patch.object(rl2, "_recurrent_policy_class", policy_class):
        trainer = Trainer(config)
    trainer.train(1)
    history = trainer.train(1 + iterations)
    weights = torch.cat([p.detach().flatten() for p in trainer.learner.model.policy.parameters()])
    return {key: statistics.median(m[key] for m in history) for key in KEYS}, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["navigation-2d", "halfcheetah-dir"])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    for env in args.envs:
        loop, loop_weights = run(env, args.iterations, sb3_contrib_policy_class)
        sequence, sequence_weights = run(env, args.iterations, rl2._recurrent_policy_class)
        print(f"rl2 on {env}, {args.iterations} iterations after one warm-up (median):")
        print(f"  {'':<24}{'sb3-contrib loop':>18}{'whole sequences':>18}")
        for key in KEYS:
            print(f"  {key:<24}{loop[key]:18.3f}{sequence[key]:18.3f}")
        speedup = loop["perf/iteration_s"] / sequence["perf/iteration_s"]
        gap = (loop_weights - sequence_weights).abs().max().item()
        print(f"  speed-up per iteration {speedup:.2f}x; largest weight difference after training {gap:.2e}")


if __name__ == "__main__":
    main()
