"""`metarl sweep`: one `metarl train` run per (β, seed), β chosen by validation return after adaptation.

Every run is a child process writing an ordinary run directory. Each final policy is then adapted on
the same validation tasks (the VALIDATION_STREAM of the first seed); the β with the highest mean over
seeds is chosen, and only its runs are evaluated on the test tasks (TEST_STREAM), which took no part
in the choice.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from metarl.errors import MetarlError, short_repr
from metarl.hyperparameters import MAX_ITERATIONS
from metarl.lifetime import STOP_WITH_PARENT_ENV

if TYPE_CHECKING:
    from metarl.algos.held_out import AdaptationResult
    from metarl.trainer import Trainer

# Config keys the sweep sets itself for every run.
RESERVED_KEYS = {
    "env": "--env",
    "seed": "--seeds",
    "regularizers": "--regularizer and --weights",
    "iterations": "--iterations",
}
OUTPUTS = ("validation.csv", "validation.png", "test.csv", "sweep.json")
# The arguments that define a sweep, saved in its directory for --resume.
SAVED_ARGS = ("env", "regularizer", "weights", "seeds", "iterations", "set")
SAVED_ARGS_FILE = "sweep-args.json"


@dataclass(frozen=True)
class SweepRun:
    """One training run of the sweep; its run directory is the one folder `metarl train` makes in `logdir`."""

    weight: float
    seed: int
    sweep_dir: Path

    @property
    def label(self) -> str:
        return f"w={self.weight:g}-s={self.seed}"

    @property
    def logdir(self) -> Path:
        return self.sweep_dir / self.label


@dataclass
class Validation:
    """Validation return after adaptation of each weight (rows) and seed (columns)."""

    weights: list[float]
    seeds: list[int]
    returns: list[list[float]]

    @property
    def means(self) -> list[float]:
        return [sum(row) / len(row) for row in self.returns]

    @property
    def stds(self) -> list[float]:
        """Sample standard deviation across seeds (NaN with one seed)."""
        return [
            math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1)) if len(row) > 1 else math.nan
            for row, m in zip(self.returns, self.means)
        ]

    @property
    def chosen(self) -> float:
        """The weight with the highest mean; ties go to the smaller weight."""
        means = self.means
        return self.weights[means.index(max(means))]

    def table(self) -> tuple[list[str], list[list[float]]]:
        """Header and rows of validation.csv."""
        header = ["weight", "validation_mean", "validation_std", *(f"seed_{s}" for s in self.seeds)]
        return header, [[w, m, s, *r] for w, m, s, r in zip(self.weights, self.means, self.stds, self.returns)]


Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_sweep_parser(subparsers: argparse._SubParsersAction[Parser]) -> Parser:
    """Add the `sweep` command to the CLI's subparsers."""
    sweep = subparsers.add_parser("sweep", help="train one run per regularizer weight and seed, choose the weight")
    sweep.add_argument("--env", help="task family (see `metarl list envs`); required without --resume")
    sweep.add_argument("--regularizer", metavar="NAME", help="regularizer whose weight β is swept; required")
    sweep.add_argument("--weights", metavar="W1,W2,...", help="the values of β, comma-separated; required")
    sweep.add_argument("--iterations", type=int, help="meta-iterations per run (default: the config's)")
    sweep.add_argument("--seeds", metavar="S1,S2,...", help="seeds, comma-separated (default 0)")
    sweep.add_argument("--logdir", type=Path, help="parent of the sweep directory (default runs)")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    sweep.add_argument("--jobs", type=int, help="runs trained at once (default: number of CPU cores)")
    sweep.add_argument(
        "--resume",
        type=Path,
        metavar="SWEEP_DIR",
        help="continue a sweep: finish its unfinished runs from their checkpoints, train those never started, "
        "then choose β again; its own arguments are read from SWEEP_DIR (only --jobs may be given)",
    )
    sweep.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return sweep


Number = TypeVar("Number", int, float)


def parse_list(text: str, parse: type[Number], what: str) -> list[Number]:
    """A comma-separated list of distinct values, sorted."""
    try:
        values = [parse(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise MetarlError(f"{what} must be comma-separated {parse.__name__} values, got {short_repr(text)}") from None
    if not values:
        raise MetarlError(f"{what} is empty")
    if len(set(values)) != len(values):
        raise MetarlError(f"{what} lists a value twice: {short_repr(text)}")
    if not all(math.isfinite(v) for v in values if isinstance(v, float)):  # (a huge int overflows isfinite)
        raise MetarlError(f"{what} must be finite, got {short_repr(text)}")
    return sorted(values)


def _sweep_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with what the command line left out filled in: from SWEEP_DIR's `sweep-args.json` under
    --resume (which then allows only --jobs), else the defaults."""
    given = {key for key in SAVED_ARGS + ("logdir",) if getattr(args, key) is not None}
    if args.resume is None:
        missing = [f"--{key}" for key in ("env", "regularizer", "weights") if key not in given]
        if missing:
            raise MetarlError(f"sweep needs {', '.join(missing)} (or --resume SWEEP_DIR)")
        defaults = {"seeds": "0", "set": [], "logdir": Path("runs")}
        return argparse.Namespace(**vars(args) | {k: v for k, v in defaults.items() if k not in given})
    if given:
        flags = ", ".join(f"--{key}" for key in sorted(given))
        raise MetarlError(f"--resume takes the sweep's own arguments from its directory; drop {flags}")
    saved_path = args.resume / SAVED_ARGS_FILE
    try:
        saved = json.loads(saved_path.read_text())
    except FileNotFoundError:
        raise MetarlError(
            f"{short_repr(str(args.resume))} is not a sweep directory: it has no {SAVED_ARGS_FILE}"
        ) from None
    except (OSError, ValueError) as exc:
        raise MetarlError(f"cannot read {short_repr(str(saved_path))}: {exc}") from None
    kinds: dict[str, type | tuple[type, ...]] = {"iterations": (int, type(None)), "set": list}
    for key in SAVED_ARGS:
        if not isinstance(saved, dict) or not isinstance(saved.get(key), kinds.get(key, str)):
            raise MetarlError(f"{short_repr(str(saved_path))} is damaged: {key!r} is missing or of the wrong type")
    return argparse.Namespace(**vars(args) | {key: saved[key] for key in SAVED_ARGS} | {"logdir": None})


def _check_args(args: argparse.Namespace) -> tuple[list[float], list[int], int]:
    """Weights, seeds and jobs; names and `--set` are checked before any run starts."""
    from metarl import registry
    from metarl.config import build_config, parse_set

    weights = parse_list(args.weights, float, "--weights")
    seeds = parse_list(args.seeds, int, "--seeds")
    if any(not 0 <= s < 2**63 for s in seeds):
        raise MetarlError(f"--seeds must be non-negative integers below 2**63, got {short_repr(args.seeds)}")
    jobs = (os.cpu_count() or 1) if args.jobs is None else args.jobs
    if jobs <= 0:
        raise MetarlError(f"--jobs must be a positive integer, got {jobs}")
    if args.iterations is not None and not 0 < args.iterations <= MAX_ITERATIONS:
        raise MetarlError(f"--iterations must be a positive integer up to {MAX_ITERATIONS}, got {args.iterations}")
    overrides = parse_set(args.set)
    for key, flag in RESERVED_KEYS.items():
        if key in overrides:
            raise MetarlError(f"--set {key} is not allowed in a sweep: use {flag}")
    build_config(overrides, origins=["--set"])
    registry.envs.load(args.env)
    registry.regularizers.load(args.regularizer)
    return weights, seeds, jobs


def _new_sweep_dir(logdir: Path, env: str, regularizer: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"sweep-{env}-{regularizer}-{stamp}-", dir=logdir))
    except OSError as exc:
        raise MetarlError(f"cannot create a sweep directory under {str(logdir)!r}: {exc.strerror or exc}") from None


def checkpointed_run_dir(run: SweepRun) -> Path | None:
    """The run directory `metarl train` made in `run.logdir`, if it has written a checkpoint."""
    from metarl.checkpoint import CHECKPOINT_DIR

    if not run.logdir.is_dir():
        return None
    found = [d for d in run.logdir.iterdir() if d.is_dir() and any((d / CHECKPOINT_DIR).glob("iter-*.pt"))]
    return found[0] if len(found) == 1 else None


def _train_command(args: argparse.Namespace, run: SweepRun, resume_dir: Path | None) -> list[str]:
    command = [sys.executable, "-m", "metarl", "train", "--no-progress"]
    if resume_dir is not None:
        command += ["--resume", str(resume_dir)]
    else:
        command += ["--env", args.env, "--regularizer", f"{args.regularizer}={run.weight!r}", "--seed", str(run.seed)]
        command += ["--logdir", str(run.logdir)]
        for item in args.set:
            command += ["--set", item]
    if args.iterations is not None:
        command += ["--iterations", str(args.iterations)]
    return command


def _error_line(log: Path) -> str:
    """The child's one-line error, else its last line of output."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("metarl: ") and "error" in line]
    return (errors or lines or ["(no output)"])[-1]


class _Children:
    """The training processes running, so that Ctrl-C stops them too (each after its iteration, with a
    checkpoint) instead of leaving them to train on unseen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    def run(self, command: list[str], **kwargs: Any) -> int | None:
        """The child's exit code, or None when the sweep was interrupted before it started."""
        with self._lock:
            if self._stopped:
                return None
            process = subprocess.Popen(command, **kwargs)
            self._running.add(process)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def interrupt(self) -> None:
        with self._lock:
            self._stopped = True
            for process in self._running:
                process.send_signal(signal.SIGINT)


def _train_one(args: argparse.Namespace, run: SweepRun, env: dict[str, str], children: _Children) -> str | None:
    """Train one run to completion, or continue it from its checkpoint (output in `logdir/train.log`);
    None, or what went wrong."""
    resume_dir = checkpointed_run_dir(run)
    if resume_dir is None and run.logdir.exists():
        shutil.rmtree(run.logdir)  # a child stopped before its first checkpoint: nothing to continue
    run.logdir.mkdir(parents=True, exist_ok=True)
    log = run.logdir / "train.log"
    command = _train_command(args, run, resume_dir)
    start = time.perf_counter()
    with log.open("a" if resume_dir is not None else "w") as out:
        returncode = children.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if returncode is None:
        return f"run {run.label} was not started: the sweep was interrupted"
    if returncode != 0:
        return f"run {run.label} failed (exit code {returncode}): {_error_line(log)} (log: {log})"
    print(f"sweep: {run.label} trained in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return None


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the sweep as Ctrl-C does: children first, with checkpoints


def train_runs(args: argparse.Namespace, runs: list[SweepRun], jobs: int) -> None:
    """Train `runs`, `jobs` at a time; after a failure no further run starts, and the error names it.
    Ctrl-C or SIGTERM stops the running children after their iteration, each with a checkpoint."""
    # the children stop (after their iteration, with a checkpoint) if this process is killed
    env = dict(os.environ) | {STOP_WITH_PARENT_ENV: str(os.getpid())}
    # `jobs` processes share the cores: without a limit each torch would start one thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    children = _Children()
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        _train_all(args, runs, jobs, env, children)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_all(
    args: argparse.Namespace, runs: list[SweepRun], jobs: int, env: dict[str, str], children: _Children
) -> None:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_train_one, args, run, env, children) for run in runs]
        try:
            for future in as_completed(futures):
                if future.result() is not None:
                    break  # start no further run; those running finish
        except KeyboardInterrupt:
            children.interrupt()  # the running children stop after their iteration; the pool waits for them
            raise
        finally:
            for future in futures:
                future.cancel()
    failures = [failure for f in futures if not f.cancelled() and (failure := f.result()) is not None]
    if failures:
        raise MetarlError("sweep stopped: " + "\n".join(failures))


def load_final(run: SweepRun) -> Trainer:
    """The trainer of a finished run with its last checkpoint loaded."""
    from metarl.trainer import Trainer

    run_dirs = [d for d in run.logdir.iterdir() if d.is_dir()]
    if len(run_dirs) != 1:
        raise MetarlError(f"run {run.label}: expected one run directory in {str(run.logdir)!r}, found {len(run_dirs)}")
    return Trainer.from_run(run_dirs[0], "last")


def adaptation_returns(trainer: Trainer, tasks: list[dict[str, Any]], seed: int) -> AdaptationResult:
    """Returns after 0..num_inner_steps steps on `tasks`, with the same env seeds and action noise for every run."""
    import torch

    c = trainer.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return trainer.evaluate(tasks, c.num_inner_steps, c.fast_batch_size, seed)


def plot_validation(
    weights: list[float], means: list[float], stds: list[float], chosen: float, title: str, path: Path
) -> None:
    """Mean validation return against β, error bars one standard deviation across seeds; log-x when all β > 0."""
    from metarl.plotting import finish_axes, new_figure, save_figure

    plt = new_figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    yerr = stds if all(math.isfinite(s) for s in stds) else None
    ax.errorbar(weights, means, yerr=yerr, marker="o", capsize=3)
    ax.axvline(chosen, color="gray", linestyle="--", label=f"chosen β = {chosen:g}")
    if all(w > 0 for w in weights):
        ax.set_xscale("log")
    finish_axes(ax, "regularizer weight β", "validation return after adaptation", title)
    save_figure(fig, path)


def validate(trainers: dict[SweepRun, Trainer], weights: list[float], seeds: list[int]) -> Validation:
    """Every final policy adapted on the same validation tasks, drawn from the first seed's VALIDATION_STREAM."""
    from metarl.algos.held_out import VALIDATION_STREAM, held_out_rng

    first = next(iter(trainers.values()))
    tasks = first.family.sample_tasks(first.config.eval_tasks, held_out_rng(seeds[0], VALIDATION_STREAM))
    returns = {run: float(adaptation_returns(t, tasks, seeds[0]).returns[:, -1].mean()) for run, t in trainers.items()}
    return Validation(weights, seeds, [[returns[r] for r in trainers if r.weight == w] for w in weights])


def evaluate_test(trainers: dict[SweepRun, Trainer], seed: int) -> dict[SweepRun, AdaptationResult]:
    """Every run of `trainers` adapted on the same test tasks, drawn from `seed`'s TEST_STREAM."""
    from metarl.algos.held_out import TEST_STREAM, held_out_rng

    first = next(iter(trainers.values()))
    tasks = first.family.sample_tasks(first.config.eval_tasks, held_out_rng(seed, TEST_STREAM))
    return {run: adaptation_returns(trainer, tasks, seed) for run, trainer in trainers.items()}


def interval(values: np.ndarray) -> dict[str, float]:
    """`values`' mean with its 95 % interval, as the keys of test.csv and sweep.json."""
    from metarl.algos.held_out import mean_interval

    mean, low, high = mean_interval(values)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def tested_rows(results: dict[SweepRun, AdaptationResult], trainers: dict[SweepRun, Trainer]) -> list[dict[str, Any]]:
    """test.csv: one row per tested run, its returns before and after adaptation averaged over the test tasks."""
    rows = []
    for run, result in results.items():
        after = interval(result.returns[:, -1])
        rows.append(
            {
                "weight": run.weight,
                "seed": run.seed,
                "run_dir": str(trainers[run].run_dir),
                "return_before_adaptation": float(result.returns[:, 0].mean()),
                "return_after_adaptation": after["mean"],
                "ci_low": after["ci_low"],
                "ci_high": after["ci_high"],
            }
        )
    return rows


def summarize_test(results: dict[SweepRun, AdaptationResult], chosen: float) -> dict[str, Any]:
    """The chosen β and β = 0 (when swept) on the test tasks, each over seeds × tasks, and their difference.

    The difference pairs the two runs of one seed on the same test task, so the tasks' spread cancels; the
    intervals treat every (seed, task) as one draw, so with few seeds they understate the spread of training.
    """

    def after(weight: float) -> np.ndarray:
        """[seeds, tasks] returns after adaptation of the runs at `weight`, seeds in sweep order."""
        return np.stack([r.returns[:, -1] for run, r in results.items() if run.weight == weight])

    chosen_returns = after(chosen)
    summary: dict[str, Any] = {
        "tasks": chosen_returns.shape[1],
        "seeds": chosen_returns.shape[0],
        "chosen": interval(chosen_returns) | {"seed_means": chosen_returns.mean(1).tolist()},
    }
    if chosen != 0.0 and any(run.weight == 0.0 for run in results):
        baseline = after(0.0)
        summary["unregularized"] = interval(baseline) | {"seed_means": baseline.mean(1).tolist()}
        summary["chosen_minus_unregularized"] = interval(chosen_returns - baseline)
    return summary


def _format_interval(name: str, values: dict[str, float]) -> str:
    return f"{name} {values['mean']:.2f} [{values['ci_low']:.2f}, {values['ci_high']:.2f}]"


def _print_test(summary: dict[str, Any], chosen: float) -> None:
    where = f"{summary['tasks']} test tasks × {summary['seeds']} seeds, 95 % intervals"
    print(f"test return after adaptation ({where}):")
    print("  " + _format_interval(f"chosen β = {chosen:g}:", summary["chosen"]))
    if "unregularized" in summary:
        print("  " + _format_interval("β = 0:", summary["unregularized"]))
        print("  " + _format_interval("difference (paired by seed and task):", summary["chosen_minus_unregularized"]))


def _print_validation(validation: Validation, num_tasks: int) -> None:
    seeds = ", ".join(map(str, validation.seeds))
    print(f"validation return after adaptation ({num_tasks} tasks; mean and std over seeds {seeds}):")
    print(f"{'weight':>12}  {'mean':>10}  {'std':>8}")
    for w, m, s in zip(validation.weights, validation.means, validation.stds):
        print(f"{w:>12g}  {m:>10.2f}  {s:>8.2f}{'  <- chosen' if w == validation.chosen else ''}")


def run_sweep(args: argparse.Namespace) -> int:
    """`metarl sweep`: train, validate, choose β, test; every output goes into a new sweep directory."""
    from metarl.checkpoint import check_writable_dir, write_csv, write_json

    args = _sweep_arguments(args)
    weights, seeds, jobs = _check_args(args)
    if args.resume is not None:
        sweep_dir = args.resume
        check_writable_dir(sweep_dir, f"cannot continue sweep {short_repr(str(sweep_dir))}")
    else:
        check_writable_dir(args.logdir, f"cannot create a sweep directory under {short_repr(str(args.logdir))}")
        sweep_dir = _new_sweep_dir(args.logdir, args.env, args.regularizer)
        write_json(sweep_dir / SAVED_ARGS_FILE, {key: getattr(args, key) for key in SAVED_ARGS})
    runs = [SweepRun(w, s, sweep_dir) for w in weights for s in seeds]
    print(f"sweep directory: {sweep_dir} ({len(runs)} runs, {min(jobs, len(runs))} at a time)", file=sys.stderr)
    try:
        train_runs(args, runs, jobs)
    except KeyboardInterrupt:
        print(f"sweep stopped; continue it with: metarl sweep --resume {sweep_dir}", file=sys.stderr)
        raise
    trainers = {run: load_final(run) for run in runs}
    num_tasks = trainers[runs[0]].config.eval_tasks

    validation = validate(trainers, weights, seeds)
    chosen = validation.chosen
    write_csv(sweep_dir / "validation.csv", *validation.table())
    title = f"{args.env}: {args.regularizer}, {num_tasks} validation tasks"
    plot_validation(weights, validation.means, validation.stds, chosen, title, sweep_dir / "validation.png")
    _print_validation(validation, num_tasks)

    tested_weights = {chosen, 0.0} & set(weights)
    results = evaluate_test({run: t for run, t in trainers.items() if run.weight in tested_weights}, seeds[0])
    rows = tested_rows(results, trainers)
    write_csv(sweep_dir / "test.csv", list(rows[0]), [list(row.values()) for row in rows])
    test = summarize_test(results, chosen)
    summary = {
        "env": args.env,
        "regularizer": args.regularizer,
        "chosen_weight": chosen,
        "validation": [
            {"weight": w, "mean": m, "std": s if math.isfinite(s) else None, "returns": dict(zip(seeds, r))}
            for w, m, s, r in zip(weights, validation.means, validation.stds, validation.returns)
        ],
        "test": test | {"mean_return_after_adaptation": test["chosen"]["mean"], "runs": rows},
        "run_dirs": {run.label: str(t.run_dir) for run, t in trainers.items()},
    }
    write_json(sweep_dir / "sweep.json", summary)
    _print_test(test, chosen)
    print("wrote " + ", ".join(str(sweep_dir / name) for name in OUTPUTS))
    return 0
