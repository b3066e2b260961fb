"""`metarl train | list`: the command line. Errors a user can fix print as one line, exit code 2."""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from metarl.errors import MetarlError, first_line, os_error_message, short_repr, warn
from metarl.hyperparameters import MAX_EPISODES, MAX_INNER_STEPS, MAX_ITERATIONS, MAX_TASKS

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.trainer import Trainer

LIST_GROUPS = ("envs", "policies", "regularizers", "algorithms", "loggers")
RUN_HELP = "a run directory, or pretrained:NAME (`metarl list pretrained`)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, `metarl: error: COMMAND: ...`, with exit code 2
    (argparse itself prints the usage and the error on several lines)."""

    def error(self, message: str) -> NoReturn:
        command = " ".join(self.prog.split()[1:])  # "metarl train" -> "train"
        self.exit(2, f"metarl: error: {command + ': ' if command else ''}{first_line(message, 500)}\n")


def build_parser() -> argparse.ArgumentParser:
    """The `metarl` command line (also rendered into the docs' CLI reference)."""
    parser = ArgumentParser(prog="metarl", description="Gradient-based meta-reinforcement learning.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    train = sub.add_parser("train", help="meta-train a policy on a task family")
    train.add_argument("--env", help="task family (see `metarl list envs`)")
    train.add_argument("--config", type=Path, help="YAML file of config keys")
    train.add_argument("--algo", help="meta-learner (see `metarl list algorithms`; default maml-trpo)")
    train.add_argument("--policy", help="policy name (default: from the action space)")
    train.add_argument(
        "--regularizer", action="append", default=[], metavar="NAME=WEIGHT", help="add β·R to the outer loss"
    )
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--iterations", type=int, help="number of meta-iterations")
    train.add_argument("--seed", type=int, help="seed of tasks, environments and initial weights")
    train.add_argument("--device", help="cpu, cuda or cuda:N")
    train.add_argument("--logdir", type=Path, default=Path("runs"), help="parent of the run directory")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--nproc",
        type=count(MAX_TASKS),
        metavar="N",
        help="train in N local processes, the meta-batch split across them (torchrun; gloo on CPU, nccl on GPU)",
    )
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    evaluate = sub.add_parser("evaluate", help="returns after 0..K inner steps on held-out tasks")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help=RUN_HELP)
    _add_adaptation_args(evaluate)
    evaluate.add_argument("--tasks", type=count(MAX_TASKS), default=40, help="held-out tasks (default 40)")
    evaluate.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=("pretrained", "scratch"),  # metarl.ppo_baselines.BASELINES, not imported at parse time
        help="also run a stable-baselines3 PPO baseline (repeatable): pretrained on the family and then "
        "adapted like the meta-learned policy, or trained from scratch on each of --baseline-tasks tasks",
    )
    evaluate.add_argument(
        "--baseline-steps",
        type=count(MAX_ITERATIONS),
        default=100_000,
        help="PPO env steps per baseline policy (default 100000)",
    )
    evaluate.add_argument(
        "--baseline-tasks", type=count(MAX_TASKS), default=3, help="held-out tasks PPO learns from scratch (default 3)"
    )
    evaluate.add_argument(
        "--video", action="store_true", help="GIF of an episode before and after adaptation, RUN_DIR/adaptation.gif"
    )
    evaluate.add_argument(
        "--video-tasks", type=count(MAX_TASKS), default=3, help="held-out tasks in the video (default 3)"
    )
    evaluate.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder of the evaluation files (default RUN_DIR; for pretrained:NAME, evaluations/NAME here)",
    )
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    adapt = sub.add_parser("adapt", help="adapt to one task and save a stable-baselines3 PPO model")
    adapt.add_argument("run_dir", metavar="RUN_DIR", help=RUN_HELP)
    adapt.add_argument("--task", required=True, help="the task as JSON, e.g. '{\"goal\": [0.3, -0.2]}'")
    adapt.add_argument("--out", type=Path, required=True, help="output .zip")
    _add_adaptation_args(adapt)
    adapt.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    plot = sub.add_parser("plot", help="training curves of one or more runs as PNG")
    plot.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/training_curves.png)")
    plot.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    from metarl.sweep import add_sweep_parser

    add_sweep_parser(sub)

    listing = sub.add_parser("list", help="installed task families, policies, regularizers, meta-learners and loggers")
    listing.add_argument(
        "group",
        nargs="?",
        choices=(*LIST_GROUPS, "config", "pretrained"),
        help="one group only; config: the run-level keys; pretrained: the shipped meta-trained runs",
    )
    listing.add_argument("-v", "--verbose", action="store_true", help="each component's keys, defaults and docs")
    listing.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def count(maximum: int, minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: an integer from `minimum` (1 or 0) to `maximum`, what can run."""
    kind = "a positive integer" if minimum > 0 else "a non-negative integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected {kind} up to {maximum}, got {short_repr(text, 60)}")
        return value

    parse.__name__ = "count"
    return parse


def seed(text: str) -> int:
    """An argparse type: a seed in [0, 2**63), the range torch.manual_seed and numpy share."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer below 2**63, got {short_repr(text, 60)}")
    return value


def _add_adaptation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", help="best, last or an iteration number (default last; best for pretrained:NAME)"
    )
    parser.add_argument(
        "--steps", type=count(MAX_INNER_STEPS, minimum=0), default=3, help="inner gradient steps (default 3)"
    )
    parser.add_argument("--episodes", type=count(MAX_EPISODES), help="episodes per task and step (default: the run's)")
    parser.add_argument("--seed", type=seed, help="seed of the held-out tasks (default: the run's)")
    parser.add_argument(
        "--env",
        help="adapt to tasks of another family with the same spaces, e.g. a test split (default: the run's)",
    )
    parser.add_argument(
        "--env-kwargs",
        metavar="YAML",
        help="keyword arguments of that family, e.g. '{split: test}' (default: the run's when --env is not given)",
    )


def _user_layers(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    from metarl.config import load_yaml, parse_set, parse_weights

    layers, origins = [], []
    if args.config is not None:
        layers.append(load_yaml(args.config))
        origins.append(f"config file {str(args.config)!r}")
    flags = {k: v for k, v in vars(args).items() if k in ("env", "algo", "policy", "iterations", "seed", "device")}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.regularizer:
        flags["regularizers"] = parse_weights(args.regularizer)
    layers.append(flags)
    origins.append("command-line flags")
    layers.append(parse_set(args.set))
    origins.append("--set")
    return layers, origins


def _resolve_config(args: argparse.Namespace) -> Config:
    from metarl.config import build_config

    layers, origins = _user_layers(args)
    return build_config(*layers, origins=origins, reference=True)


def _progress(total: int, start: int, enabled: bool) -> tuple[Any, Callable[[int, dict[str, float]], None]]:
    """A tqdm bar (untyped) and the function that shows an iteration's metrics on it."""
    from tqdm import tqdm

    from metarl.metrics import ENV_STEPS_PER_S, NON_FINITE, RETURN_AFTER, RETURN_BEFORE

    bar = tqdm(total=total, initial=start, disable=not enabled, unit="it", dynamic_ncols=True)

    def update(iteration: int, metrics: dict[str, float]) -> None:
        shown = {
            "before": f"{metrics[RETURN_BEFORE]:.2f}",
            "after": f"{metrics[RETURN_AFTER]:.2f}",
            "steps_s": f"{metrics[ENV_STEPS_PER_S]:.0f}",
        }
        if metrics.get(NON_FINITE):
            shown["step"] = "refused (non-finite)"
        elif "train/line_search_accepted" in metrics:
            shown["step"] = "ok" if metrics["train/line_search_accepted"] else "rejected"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    return bar, update


@contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[list[int]]:
    """SIGINT/SIGTERM ask the trainer to stop after the iteration in progress; yields the signals seen."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        trainer.stop_requested = True
        warn(f"{signal.Signals(signum).name} received: stopping after the current iteration")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stop_with_parent() -> None:
    """A run started by `metarl sweep` gets SIGTERM (stop after the iteration) when the sweep ends,
    even by SIGKILL; the variable is removed so that no process this one starts inherits it."""
    from metarl.lifetime import STOP_WITH_PARENT_ENV, signal_on_parent_death

    parent = os.environ.pop(STOP_WITH_PARENT_ENV, None)
    if parent is not None and parent.isdigit() and not signal_on_parent_death(int(parent), signal.SIGTERM):
        raise MetarlError("the sweep that started this run has ended")


def _train(args: argparse.Namespace) -> int:
    from metarl import distributed
    from metarl.metrics import RETURN_AFTER, RETURN_BEFORE
    from metarl.trainer import Trainer, resume_trainer

    _stop_with_parent()
    if args.nproc is not None and args.nproc > 1 and not distributed.launched():
        distributed.relaunch(args.nproc, args.argv)  # replaces this process; the workers see torchrun's env

    if args.resume is not None:
        trainer = resume_trainer(args.resume, warn, *_user_layers(args))
        iterations = trainer.config.iterations
    else:
        config = _resolve_config(args)
        trainer = Trainer(config)
        iterations = config.iterations
        trainer.start_run(args.logdir)
    reporting = distributed.is_main()  # under torchrun, only rank 0 has a run directory and reports
    if reporting:
        print(f"run directory: {trainer.run_dir}", file=sys.stderr)
    bar, update = _progress(iterations, trainer.iteration, reporting and not args.no_progress)
    with _stop_on_signals(trainer) as received:
        try:
            history = trainer.train(iterations, on_iteration=update)
        finally:
            bar.close()
    if received:
        if reporting:
            path = trainer.save()
            nproc = f" --nproc {distributed.world_size()}" if distributed.world_size() > 1 else ""
            print(f"stopped at iteration {trainer.iteration}; checkpoint {path}", file=sys.stderr)
            print(f"resume with: metarl train --resume {trainer.run_dir}{nproc}", file=sys.stderr)
        return 128 + received[0]
    if history and reporting:
        last = history[-1]
        print(
            f"iteration {trainer.iteration}: return before adaptation {last[RETURN_BEFORE]:.2f}, "
            f"after adaptation {last[RETURN_AFTER]:.2f}; logs in {trainer.run_dir}"
        )
    return 0


def _trainer_at_checkpoint(args: argparse.Namespace) -> Trainer:
    from metarl import pretrained
    from metarl.config import check_finite, parse_value
    from metarl.trainer import Trainer

    if args.checkpoint is None:
        args.checkpoint = "best" if pretrained.is_pretrained(args.run_dir) else "last"
    trainer = Trainer.from_run(pretrained.run_dir(args.run_dir), args.checkpoint)
    if args.env is not None or args.env_kwargs is not None:
        env_kwargs = {} if args.env is not None else trainer.config.env_kwargs
        if args.env_kwargs is not None:
            env_kwargs = parse_value("--env-kwargs", args.env_kwargs)
            check_finite(env_kwargs, "env_kwargs", "--env-kwargs")
        trainer.use_family(args.env or trainer.config.env, env_kwargs)
    return trainer


def _check_memory(trainer: Trainer, what: str, tasks: int, episodes: int | None) -> None:
    from metarl.build import check_batch_memory

    config = trainer.config
    horizon, hidden = config.horizon_for(trainer.family), config.policy_kwargs.get("hidden_sizes")
    episodes = episodes or config.fast_batch_size
    check_batch_memory(what, tasks, episodes, horizon, 1, trainer.spaces, hidden, trainer.device)


def _evaluate(args: argparse.Namespace) -> int:
    from metarl import pretrained
    from metarl.checkpoint import check_writable_dir
    from metarl.evaluation import evaluate_run

    trainer = _trainer_at_checkpoint(args)
    shipped = pretrained.is_pretrained(args.run_dir)  # never written into: the installed package
    default_out = Path("evaluations") / args.run_dir[len(pretrained.PREFIX) :] if shipped else Path(args.run_dir)
    out = args.out or default_out
    check_writable_dir(out, f"cannot write the evaluation into {short_repr(str(out))}")  # before it runs
    _check_memory(trainer, "the evaluation", args.tasks, args.episodes)
    report, paths = evaluate_run(
        trainer,
        out,
        args.checkpoint,
        args.tasks,
        args.steps,
        episodes=args.episodes,
        seed=args.seed,
        baselines=args.baseline,
        baseline_steps=args.baseline_steps,
        baseline_tasks=args.baseline_tasks,
        video_tasks=args.video_tasks if args.video else 0,
    )
    print(report)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


class _NonFiniteNumber(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NonFiniteNumber(f"{short_repr(text, 40)} is not a finite number")
    return value


def _no_constant(name: str) -> float:
    raise _NonFiniteNumber(f"{name} is not a finite number")


def parse_task(text: str) -> dict[str, Any]:
    """`--task`: a JSON object whose numbers are all finite (json itself accepts NaN and Infinity)."""
    import json

    try:
        task = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except _NonFiniteNumber as exc:
        raise MetarlError(f"--task: {exc}; every number of a task must be finite") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError; an int of more than 4300 digits; deep nesting
        raise MetarlError(f"--task is not valid JSON: {first_line(exc)}") from None
    if not isinstance(task, dict):
        raise MetarlError(f"--task must be a JSON object, got {type(task).__name__}")
    return task


def _adapt(args: argparse.Namespace) -> int:
    from metarl.checkpoint import check_writable_file
    from metarl.export import export_sb3
    from metarl.policies.batched import unstack

    task = parse_task(args.task)
    trainer = _trainer_at_checkpoint(args)
    config = trainer.config
    seed = config.seed if args.seed is None else args.seed
    check_writable_file(args.out, f"cannot save the model as {short_repr(str(args.out))}", suffix=".zip")
    _check_memory(trainer, "the adaptation", 1, args.episodes)
    try:
        env = trainer.family.make_env(task)
    except Exception as exc:
        raise MetarlError(
            f"env {config.env!r} cannot build task {short_repr(args.task)}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    episodes = args.episodes or config.fast_batch_size
    result = trainer.evaluate([task], args.steps, episodes, seed)
    if not result.adapted_params:
        raise MetarlError(f"algorithm {config.algo!r} adapts through memory, not weights: it has nothing to export")
    path = export_sb3(trainer.policy, unstack(result.adapted_params)[0], env, args.out)
    returns = ", ".join(f"{r:.2f}" for r in result.returns[0])
    print(f"return after 0..{args.steps} steps: {returns}; saved {path}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from metarl.loggers.progress import PROGRESS_FILE
    from metarl.plotting import plot_training_curves

    for run_dir in args.run_dirs:
        if not (run_dir / PROGRESS_FILE).is_file():
            raise MetarlError(f"{str(run_dir)!r} is not a metarl run directory with progress (no progress.csv)")
    out = args.out or args.run_dirs[0] / "training_curves.png"
    from metarl.checkpoint import check_writable_file

    check_writable_file(out, f"cannot write the plot as {short_repr(str(out))}")
    plot_training_curves(args.run_dirs, out)
    print(f"wrote {out}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from metarl.sweep import run_sweep

    return run_sweep(args)


def _list(args: argparse.Namespace) -> int:
    from metarl.listing import print_listing

    print_listing(args.group, args.verbose)
    return 0


def _check_train(args: argparse.Namespace) -> None:
    """What `train` refuses before it builds anything, or relaunches itself under torchrun: a --logdir
    or resumed run directory that cannot take files (read-only, full), and an --nproc that cannot split
    the meta-batch (`distributed.check_nproc`)."""
    from metarl import distributed
    from metarl.checkpoint import CHECKPOINT_DIR, check_writable_dir

    if args.resume is not None:
        for folder in (args.resume, args.resume / CHECKPOINT_DIR):
            if folder.is_dir():  # a path that is not a run directory is reported by the resume itself
                check_writable_dir(folder, f"cannot continue run {short_repr(str(args.resume))}")
    else:
        check_writable_dir(args.logdir, f"cannot create a run directory under {short_repr(str(args.logdir))}")
    if args.nproc is not None and args.nproc > 1 and not distributed.launched():
        from metarl.trainer import load_run_config

        config = load_run_config(args.resume) if args.resume is not None else _resolve_config(args)
        distributed.check_nproc(config, args.nproc)


#: the longest error message printed (a plugin's message can quote anything)
MAX_MESSAGE = 2000
#: OSErrors that are the user's to fix wherever they happen: a full disk or quota, a read-only file system
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `metarl` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc N` relaunches itself with the same arguments
    try:
        commands = {
            "train": _train,
            "evaluate": _evaluate,
            "adapt": _adapt,
            "plot": _plot,
            "sweep": _sweep,
            "list": _list,
        }
        if args.command == "train":
            _check_train(args)
        return commands[args.command](args)
    except MetarlError as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc) if len(str(exc)) <= MAX_MESSAGE else str(exc)[: MAX_MESSAGE - 3] + "..."
        print(f"metarl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops after its iteration): no traceback
        if args.debug:
            traceback.print_exc()
        print("metarl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, ours or a plugin's: one line unless --debug
        if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS and not args.debug:  # a full disk, anywhere
            print(f"metarl: error: {os_error_message(exc, exc.filename or 'a file')}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        cause = f"{type(exc).__name__}: {first_line(exc, MAX_MESSAGE)}"
        print(f"metarl: internal error: {cause} (run with --debug for the traceback)", file=sys.stderr)
        return 1
