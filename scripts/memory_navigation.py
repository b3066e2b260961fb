"""Peak and current resident memory over a long navigation-2d run: the run must keep its memory flat.

    python scripts/memory_navigation.py [--iterations 200] [--every 50]

Prints, every `--every` iterations, the current RSS (from /proc/self/status) and the peak RSS
(`resource.getrusage`), in MiB.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from metarl.config import build_config
from metarl.trainer import Trainer
from metarl_envs.navigation import Navigation2D


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    trainer = Trainer(build_config(Navigation2D.reference_config(), {"seed": 0}))
    start = time.perf_counter()
    print(f"{'iteration':>9}  {'rss MiB':>8}  {'peak MiB':>8}  {'seconds':>8}  return after adaptation")

    def report(iteration: int, metrics: dict[str, float]) -> None:
        if iteration % args.every == 0:
            print(
                f"{iteration:>9}  {current_rss_mib():>8.1f}  {peak_rss_mib():>8.1f}  "
                f"{time.perf_counter() - start:>8.0f}  {metrics['return/after_adaptation']:.2f}",
                flush=True,
            )

    trainer.train(args.iterations, on_iteration=report)


if __name__ == "__main__":
    main()
