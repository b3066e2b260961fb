"""Every installed meta-learner on one task family, each with its own reference settings, on the same
env-step budget, over several seeds.

    python scripts/compare_learners.py --env navigation-2d --budget-iterations 200 --seeds 1 2 3 \
        --out docs/data/learners-navigation-2d [--algos NAME...] [--threads 1]
    python scripts/compare_learners.py --env halfcheetah-dir --budget-steps 10000000 --seeds 1 2 3 \
        --set horizon=100 --set env_kwargs.action_scale=10 --out docs/data/learners-halfcheetah-dir

Each (learner, seed) trains from the family's shipped config with the learner's own section (the
`algorithms:` part of envs/configs/ENV.yaml: horizon, action scale, learning rates), validation off,
until it has taken the budget's env steps (train and validation episodes; `--budget-iterations N` is N iterations
of MAML-TRPO's settings); `--jobs` runs at once, each in a worker process. Each run has its run directory
under OUT/runs/ALGO-seedS-BUDGET, with a checkpoint every `checkpoint_every` iterations. Each finished run
adds a row to OUT/table.csv and its curve to OUT/curves.csv. A (learner, seed, budget) already in the
table is skipped, and a stopped run continues from its newest checkpoint (`metarl train --resume`), so a
stopped comparison continues where it stopped. `--set` applies to every run after its
section: on halfcheetah-dir it puts the learners whose sections keep the MAML paper's horizon 200 on the
ProMP paper's protocol, on which the ProMP paper compares them all. Then prints, per learner, the mean
± std over seeds of the return before and after adaptation over the last 10 iterations (for rl2: its first
and second episode of a trial), and draws the curves after adaptation as OUT/curves.png.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import shutil
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from plot_benchmarks import running_mean

from metarl import registry
from metarl.checkpoint import list_checkpoints, write_csv
from metarl.config import Config, build_config, parse_set
from metarl.lifetime import signal_on_parent_death
from metarl.metrics import ENV_STEPS, ITERATION_S, RETURN_AFTER, RETURN_BEFORE
from metarl.plotting import finish_axes, new_figure, read_progress, save_figure
from metarl.trainer import Trainer, resume_trainer

TABLE = ["env", "algo", "seed", "budget", "iterations", "env_steps", "horizon", "action_scale"]
TABLE += ["return_before", "return_after", "wall_s"]
CURVES = ["env", "algo", "seed", "budget", "iteration", "env_steps", "return_before", "return_after"]
LAST = 10  # iterations averaged for the table


def learner_config(env: str, algo: str, seed: int, overrides: dict[str, Any]) -> Config:
    """The family's shipped config with `algo`'s section, validation off, then `overrides` (--set)."""
    return build_config({"env": env, "algo": algo, "seed": seed, "eval_every": 0}, overrides, reference=True)


def step_budget(env: str, iterations: int, overrides: dict[str, Any]) -> int:
    """Env steps of `iterations` MAML-TRPO iterations on `env`'s settings: train and validation episodes."""
    config = learner_config(env, "maml-trpo", 0, overrides)
    horizon = config.horizon_for(registry.envs.load(env))
    return iterations * 2 * config.meta_batch_size * config.fast_batch_size * horizon


def run_folder(out: Path, algo: str, seed: int, budget: int) -> Path:
    """The folder that holds one (learner, seed, budget)'s run directory."""
    return out / "runs" / f"{algo}-seed{seed}-{budget}"


def train_to_budget(
    env: str, algo: str, seed: int, overrides: dict[str, Any], budget: int, threads: int, folder: Path
) -> dict[str, list[float]]:
    """Train the run in `folder` until it has taken `budget` env steps, continuing it from its newest
    checkpoint if it has one; returns the columns of its progress.csv."""
    torch.set_num_threads(threads)
    started = [run for run in sorted(folder.glob("*/")) if list_checkpoints(run)]
    if started:
        trainer = resume_trainer(started[-1], lambda message: print(message, file=sys.stderr))
        logged = read_progress(started[-1])
        done = [s for i, s in zip(logged["iteration"], logged[ENV_STEPS]) if i <= trainer.iteration]
        steps = [sum(done)]
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a run stopped before its first checkpoint starts again
        trainer, steps = Trainer(learner_config(env, algo, seed, overrides)), [0.0]
        trainer.start_run(folder)

    def stop_at_budget(iteration: int, metrics: dict[str, float]) -> None:
        steps.append(steps[-1] + metrics[ENV_STEPS])
        trainer.stop_requested = steps[-1] >= budget
        if iteration % 10 == 0:  # some learners take an hour: show they are moving
            print(f"{env} {algo} seed {seed}: iteration {iteration}, {steps[-1]:,.0f} of {budget:,} env steps",
                  file=sys.stderr, flush=True)  # fmt: skip

    if steps[-1] < budget:
        trainer.train(10**9, stop_at_budget)
    else:  # trained to the budget before its table row was written
        trainer.release_run_dir()
    assert trainer.run_dir is not None
    return read_progress(trainer.run_dir)


def stop_with_parent(parent_pid: int) -> None:
    """A worker's initializer: the worker ends when this script ends, however it ends, instead of
    training on as an orphan; its run continues from its newest checkpoint next time."""
    if not signal_on_parent_death(parent_pid, signal.SIGTERM):
        os._exit(1)


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_key(row: dict[str, Any]) -> tuple[str, str, int, int]:
    return row["env"], row["algo"], int(row["seed"]), int(row["budget"])


def add_rows(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    """`rows` in place of the file's rows of the same runs (a run stopped before its table row), the
    whole file rewritten atomically."""
    new = {run_key(row) for row in rows}
    kept = [[row[k] for k in header] for row in read_rows(path) if run_key(row) not in new]
    write_csv(path, header, kept + [[row[k] for k in header] for row in rows])


def print_table(rows: list[dict[str, str]]) -> None:
    print("| env | learner | budget (env steps) | iterations | seeds | return before | return after | wall-clock s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["env"], row["algo"], row["budget"]), []).append(row)
    for (env, algo, budget), group in groups.items():
        cells = []
        for key in ("return_before", "return_after"):
            values = np.array([float(r[key]) for r in group])
            spread = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.1f}{spread}")
        iterations = np.mean([int(r["iterations"]) for r in group])
        seconds = np.mean([float(r["wall_s"]) for r in group])
        print(f"| {env} | {algo} | {int(budget):,} | {iterations:.0f} | {len(group)} | {cells[0]} | {cells[1]} "
              f"| {seconds:.0f} |")  # fmt: skip


def plot_curves(rows: list[dict[str, str]], budget: int, title: str, path: Path) -> None:
    """Return after adaptation against env steps, one line per learner: the mean over seeds of each
    seed's centred 10-iteration mean, shaded between the lowest and highest seed."""
    plt = new_figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    runs: dict[str, dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        if int(row["budget"]) == budget:
            runs.setdefault(row["algo"], {}).setdefault(row["seed"], []).append(row)
    for algo, seeds in runs.items():
        length = min(len(curve) for curve in seeds.values())
        smoothed = np.array(
            [running_mean([float(r["return_after"]) for r in c], LAST)[:length] for c in seeds.values()]
        )
        steps = np.mean([[float(r["env_steps"]) for r in c[:length]] for c in seeds.values()], axis=0)
        (line,) = ax.plot(steps, smoothed.mean(0), label=f"{algo} ({len(seeds)} seeds)")
        ax.fill_between(steps, smoothed.min(0), smoothed.max(0), color=line.get_color(), alpha=0.15)
    finish_axes(ax, "env steps", f"return after adaptation ({LAST}-iteration mean)", title, legend_size=8)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="task family")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-steps", type=int, help="env steps per run")
    budget.add_argument("--budget-iterations", type=int, help="env steps of this many MAML-TRPO iterations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--algos", nargs="+", help="learners to run (default: every installed one)")
    parser.add_argument("--out", type=Path, required=True, help="folder of table.csv and curves.csv")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key for every run")
    args = parser.parse_args()
    overrides = parse_set(args.set)
    if args.budget_steps is not None:
        steps = args.budget_steps
    else:
        steps = step_budget(args.env, args.budget_iterations, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    table, curves = args.out / "table.csv", args.out / "curves.csv"
    done = {run_key(row) for row in read_rows(table)}
    todo = [(algo, seed) for algo in args.algos or registry.algorithms.names() for seed in args.seeds]
    todo = [(algo, seed) for algo, seed in todo if (args.env, algo, seed, steps) not in done]
    # runs in worker processes, each with its own torch threads; only this process writes the files
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, spawn, initializer=stop_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {
            pool.submit(
                train_to_budget, args.env, a, s, overrides, steps, args.threads, run_folder(args.out, a, s, steps)
            ): (a, s)
            for a, s in todo
        }
        for future in as_completed(futures):
            algo, seed = futures[future]
            progress = future.result()
            cumulative = np.cumsum(progress[ENV_STEPS]).tolist()
            seconds = float(np.sum(progress[ITERATION_S]))  # the iterations' own times, summed over resumes
            config = learner_config(args.env, algo, seed, overrides)
            run = {"env": args.env, "algo": algo, "seed": seed, "budget": steps}
            curve = [
                run | {"iteration": i, "env_steps": s, "return_before": before, "return_after": after}
                for i, (s, before, after) in enumerate(
                    zip(cumulative, progress[RETURN_BEFORE], progress[RETURN_AFTER]), start=1
                )
            ]
            add_rows(curves, CURVES, curve)  # before the table row: a run without one is read again
            summary = {
                "iterations": len(curve),
                "env_steps": cumulative[-1],
                "horizon": config.horizon_for(registry.envs.load(args.env)),
                "action_scale": config.env_kwargs.get("action_scale", 1.0),
                "return_before": np.mean([row["return_before"] for row in curve[-LAST:]]),
                "return_after": np.mean([row["return_after"] for row in curve[-LAST:]]),
                "wall_s": round(seconds, 1),
            }
            add_rows(table, TABLE, [run | summary])
            print(f"{args.env} {algo} seed {seed}: {summary['return_after']:.2f} after adaptation "
                  f"({len(curve)} iterations, {seconds:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    print_table(read_rows(table))
    plot_curves(read_rows(curves), steps, f"{args.env}: every learner, {steps:,} env steps", args.out / "curves.png")
    print(f"wrote {table}, {curves}, {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
