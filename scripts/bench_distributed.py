"""Env steps per second and seconds per meta-iteration of `metarl train` in 1 and in N processes.

Each run is a real `metarl train` (N > 1 through torchrun, gloo on CPU), figures read from its
progress.csv, the first iteration left out as warm-up. Each process runs `--threads` torch threads
(default 1: on a shared machine, intra-op threads that wait on a busy core are much slower).

  python scripts/bench_distributed.py [--env halfcheetah-vel] [--nprocs 1 2] [--iterations 4]
      [--meta-batch 8] [--episodes 10] [--horizon 100] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from metarl import distributed

CORES = distributed.available_cores()


def run(nproc: int, args: argparse.Namespace, logdir: Path) -> list[dict[str, float]]:
    """Train in `nproc` processes; the rows of progress.csv after the first iteration."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    settings = {
        "meta_batch_size": args.meta_batch,
        "fast_batch_size": args.episodes,
        "horizon": args.horizon,
        "eval_every": 0,
        "checkpoint_every": 0,
    }
    command = [*launcher, "-m", "metarl", "train", "--env", args.env, "--iterations", str(args.iterations)]
    command += [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    command += ["--device", args.device, "--no-progress", "--logdir", str(logdir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    (run_dir,) = logdir.iterdir()
    with (run_dir / "progress.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="halfcheetah-vel")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(
        f"{args.env}: {args.meta_batch} tasks × {args.episodes} episodes × {args.horizon} steps, "
        f"{args.iterations - 1} timed iterations, {CORES} cores, {args.threads} torch threads per process, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"  {'processes':>9}{'env steps/s':>14}{'s/iteration':>14}{'sampling s':>12}{'adapt s':>10}{'outer s':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in args.nprocs:
            rows = run(nproc, args, Path(tmp) / f"nproc{nproc}")
            total_steps = sum(r["perf/env_steps"] for r in rows)
            total_s = sum(r["perf/iteration_s"] for r in rows)
            mean = {
                k: sum(r[f"perf/{k}"] for r in rows) / len(rows) for k in ("sampling_s", "adaptation_s", "outer_step_s")
            }
            print(
                f"  {nproc:>9}{total_steps / total_s:>14,.0f}{total_s / len(rows):>14.2f}"
                f"{mean['sampling_s']:>12.2f}{mean['adaptation_s']:>10.2f}{mean['outer_step_s']:>10.2f}"
            )


if __name__ == "__main__":
    main()
