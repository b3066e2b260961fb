"""A training run: build family, policy, regularizers and learner from a Config; iterate, log, checkpoint."""

from __future__ import annotations

import copy
import math
import random
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from metarl import __version__, distributed, registry
from metarl.algos.held_out import VALIDATION_STREAM, AdaptationResult, held_out_rng
from metarl.allocator import keep_freed_memory
from metarl.build import build_run, make_family, probe_spaces
from metarl.checkpoint import (
    atomic_write,
    best_checkpoint_path,
    checkpoint_path,
    load_newest_checkpoint,
    save_checkpoint,
)
from metarl.config import Config, build_config, load_yaml
from metarl.errors import (
    DISK_ERRNOS,
    ConfigError,
    MetarlError,
    PluginError,
    first_line,
    os_error_message,
    short_repr,
)
from metarl.loggers import RunLoggers
from metarl.metrics import NON_FINITE, VALIDATION_RETURN, WALL_TIME_S
from metarl.run_lock import RunLock
from metarl.tasks import space_signature

CONFIG_FILE = "config.yaml"
#: run-level keys that `--resume` may change; the others would make the run a different experiment
RESUMABLE_KEYS = (
    "iterations",
    "checkpoint_every",
    "eval_every",
    "max_nonfinite_updates",
    "loggers",
    "logger_kwargs",
    "num_workers",
    "worker_timeout",
)


def seed_rank(seed: int, iteration: int) -> None:
    """Seed torch (action sampling) for this rank and iteration, when training across processes.

    Each rank samples its own actions, and a resumed run repeats the uninterrupted one exactly because
    the stream depends only on (seed, rank, iteration). One process keeps its single seeded stream.
    """
    if distributed.world_size() > 1:
        entropy = np.random.SeedSequence([seed, distributed.rank(), iteration]).generate_state(1)[0]
        torch.manual_seed(int(entropy))


def new_run_dir(logdir: Path, config: Config) -> Path:
    """A fresh directory under `logdir` named after env, time and seed."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = logdir / f"{config.env}-{stamp}-seed{config.seed}"
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        for suffix in range(1000):
            candidate = base if suffix == 0 else base.with_name(f"{base.name}-{suffix}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as exc:
        raise MetarlError(f"cannot create a run directory under {str(logdir)!r}: {exc.strerror or exc}") from None
    raise MetarlError(f"too many runs named {base.name!r} in {str(logdir)!r}")


class Trainer:
    """Owns everything of one run; `train` runs meta-iterations with logging and checkpoints.

    Under torchrun every rank builds the same Trainer; only rank 0 (`distributed.is_main()`) has a
    run directory, so only it logs, validates and writes checkpoints.
    """

    def __init__(self, config: Config) -> None:
        keep_freed_memory()
        run = build_run(config)
        self.config = run.config  # every component's keys resolved: what config.yaml records
        self.device, self.family, self.spaces, self.rng = run.device, run.family, run.spaces, run.rng
        self.policy, self.learner = run.policy, run.learner
        self.family_name, self.family_kwargs = config.env, config.env_kwargs
        self.iteration = 0
        self.run_dir: Path | None = None
        self.validation_tasks = self.family.sample_tasks(
            config.eval_tasks, held_out_rng(config.seed, VALIDATION_STREAM)
        )
        self.best_validation = -math.inf
        #: set (e.g. by a signal handler) to stop after the iteration in progress
        self.stop_requested = False
        self._lock: RunLock | None = None

    def hold_run_dir(self, warn: Callable[[str], None] | None = None) -> None:
        """Take the run directory's lock (one writer per run): `start_run` and `resume_trainer` take it
        and `train` releases it when it returns; a process that ends, however it ends, releases it too."""
        assert self.run_dir is not None
        if self._lock is None or self._lock.path.parent != self.run_dir:
            self._lock = RunLock(self.run_dir)
        self._lock.acquire(warn)

    def release_run_dir(self) -> None:
        """Let another process write this run directory."""
        if self._lock is not None:
            self._lock.release()

    def use_family(self, name: str, env_kwargs: dict[str, Any]) -> None:
        """Adapt and evaluate on tasks of family `name` from now on (e.g. a benchmark's test split).

        Its observations and actions must have the shapes the policy was built for.
        """
        if not isinstance(env_kwargs, dict):
            raise ConfigError(f"env_kwargs: {env_kwargs!r} is not a mapping of keyword arguments")
        family = make_family(self.config.replace(env=name, env_kwargs=env_kwargs))
        spaces = probe_spaces(family, name)
        if [space_signature(s) for s in spaces] != [space_signature(s) for s in self.spaces]:
            raise ConfigError(
                f"env {name!r} has observation and action spaces {spaces}, but the run's policy was built for "
                f"{self.spaces} ({self.config.env!r})"
            )
        self.family = self.learner.family = family
        self.family_name, self.family_kwargs = name, env_kwargs

    def start_run(self, logdir: str | Path) -> Path | None:
        """Create the run directory and write the resolved config into it (rank 0 only; None elsewhere)."""
        if not distributed.is_main():
            return None
        self.run_dir = new_run_dir(Path(logdir), self.config)
        self.hold_run_dir()
        self.write_config()
        return self.run_dir

    def write_config(self) -> None:
        """The resolved config as the run directory's config.yaml (atomically)."""
        assert self.run_dir is not None
        atomic_write(self.run_dir / CONFIG_FILE, yaml.safe_dump(self.config.to_dict(), sort_keys=False).encode())

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | int = "last") -> Trainer:
        """The trainer of a run directory at a checkpoint (`"best"`, `"last"` or an iteration number).

        It can `evaluate`, or `train(n)` further: training continues the run directory from that
        checkpoint (rows and checkpoints logged after it are replaced).
        """
        from metarl.checkpoint import load_checkpoint, select_checkpoint

        run_dir = Path(run_dir)
        load_run_config(run_dir)  # a folder that is not a run fails here, before looking for checkpoints
        return trainer_from_run(run_dir, load_checkpoint(select_checkpoint(run_dir, str(checkpoint))))

    def state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly."""
        return {
            "metarl_version": __version__,
            "env": self.config.env,
            "config": self.config.to_dict(),
            "policy": self.policy.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "best_validation": self.best_validation,
            "learner": self.learner.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.state()) - set(state))
        if missing:
            raise MetarlError(f"checkpoint lacks {', '.join(missing)}: it was written by another metarl version")
        if state.get("env") != self.config.env:
            raise MetarlError(f"checkpoint is for env {state.get('env')!r}, not {self.config.env!r}")
        try:
            self.policy.load_state_dict(state["policy"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise MetarlError(f"checkpoint policy does not fit this policy: {first}") from None
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.best_validation = float(state["best_validation"])
        self.learner.load_state_dict(state["learner"])
        self.iteration = int(state["iteration"])

    def save(self) -> Path:
        """Write the checkpoint of the current iteration (holding the run directory's lock)."""
        assert self.run_dir is not None
        self.hold_run_dir()
        return save_checkpoint(checkpoint_path(self.run_dir, self.iteration), self.iteration, self.state())

    def evaluate(self, tasks: list[dict[str, Any]], steps: int, episodes: int, seed: int) -> AdaptationResult:
        """Returns on `tasks` after 0..`steps` adaptation steps, as the learner adapts (by default inner
        gradient steps with the learner's step size)."""
        result: AdaptationResult = self.learner.evaluate(tasks, steps, episodes, seed)
        return result

    def validate(self) -> float:
        """Mean return after adaptation on the fixed validation tasks (training RNG streams untouched).

        Runs in this process alone, on all validation tasks; under torchrun, on rank 0 only.
        """
        with torch.random.fork_rng(devices=[]):
            result = self.evaluate(
                self.validation_tasks,
                self.config.num_inner_steps,
                self.config.fast_batch_size,
                seed=self.config.seed + self.iteration,
            )
        return float(result.returns[:, -1].mean())

    def train(
        self, iterations: int, on_iteration: Callable[[int, dict[str, float]], None] | None = None
    ) -> list[dict[str, float]]:
        """Run meta-iterations until `iterations` are done or a stop is requested.

        With a run directory (rank 0): holds its lock until it returns, logs to the loggers the config names and writes
        checkpoints; validates in rank 0 (or the only process). Updates refused for non-finite values
        are counted; `max_nonfinite_updates` in a row stop the run with a MetarlError. A run that fails
        (a plugin raising mid-run, a full disk) first writes the checkpoint of its last completed
        iteration if it has none, and a plugin's exception becomes a PluginError naming it. Across
        processes, θ starts from rank 0's, and a stop asked of any rank stops all of them after the
        iteration.
        """
        if self.run_dir is not None:
            self.hold_run_dir()
        logger = RunLoggers(self.run_dir, self.config.to_dict(), self.iteration) if self.run_dir else None
        history, start, refused_in_a_row = [], time.perf_counter(), 0
        unsaved: dict[str, Any] | None = None  # the last completed iteration's state, if not checkpointed
        try:
            distributed.broadcast_module(self.policy)
            while self.iteration < iterations and not distributed.any_rank(self.stop_requested):
                seed_rank(self.config.seed, self.iteration)
                metrics = self.learner.step(self.rng)
                self.iteration += 1
                metrics[WALL_TIME_S] = time.perf_counter() - start
                refused_in_a_row = refused_in_a_row + 1 if metrics[NON_FINITE] else 0
                every = self.config.eval_every
                validated = distributed.is_main() and bool(every) and self.iteration % every == 0
                metrics[VALIDATION_RETURN] = self.validate() if validated else math.nan
                self.learner.end_iteration(metrics)
                improved = validated and metrics[VALIDATION_RETURN] > self.best_validation
                if improved:
                    self.best_validation = metrics[VALIDATION_RETURN]
                history.append(metrics)
                if logger is not None:
                    logger.log(self.iteration, metrics)
                    every = self.config.checkpoint_every
                    due = bool(every and self.iteration % every == 0) or self.iteration == iterations
                    if due:
                        self.save()
                    if improved:
                        save_checkpoint(best_checkpoint_path(logger.run_dir), self.iteration, self.state())
                    unsaved = None if due else copy.deepcopy(self.state() | {"iteration": self.iteration})
                if on_iteration is not None:
                    on_iteration(self.iteration, metrics)
                if refused_in_a_row >= self.config.max_nonfinite_updates:
                    raise MetarlError(
                        f"stopped at iteration {self.iteration}: {refused_in_a_row} updates in a row were refused "
                        "because returns, advantages, gradients or the step were NaN or infinite"
                    )
        except Exception as exc:
            explained = self._explained(exc, self._save_on_the_way_out(unsaved))
            if explained is exc:
                raise
            raise explained from exc
        finally:
            self.learner.close()
            if logger is not None:
                logger.close()
            self.release_run_dir()
        return history

    def _save_on_the_way_out(self, unsaved: dict[str, Any] | None) -> Path | None:
        """Write the checkpoint of the last completed iteration if it has none (rank 0); None if not written."""
        if self.run_dir is None or unsaved is None:
            return None
        iteration = int(unsaved.pop("iteration"))
        try:
            return save_checkpoint(checkpoint_path(self.run_dir, iteration), iteration, unsaved)
        except OSError:
            return None  # the disk that failed the run fails this too; the older checkpoints stand

    def _explained(self, exc: Exception, saved: Path | None) -> Exception:
        """The error to raise for `exc`: one line for a full disk or a plugin's exception (naming it),
        `exc` itself for metarl's own errors and bugs. Says how to continue when a checkpoint exists."""
        resume = f"; resume with: metarl train --resume {self.run_dir}" if self.run_dir is not None else ""
        written = f"; checkpoint of iteration {self.iteration} written" if saved is not None else ""
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            where = exc.filename if exc.filename is not None else self.run_dir
            return MetarlError(f"{os_error_message(exc, where)}{written}; free space, then{resume.lstrip(';')}")
        if isinstance(exc, MetarlError):
            return type(exc)(f"{exc}{written}{resume}") if written else exc
        culprit = self._plugin_in_traceback(exc)
        if culprit is None:
            if written:
                print(f"metarl: checkpoint of iteration {self.iteration} written{resume}", file=sys.stderr)
            return exc
        return PluginError(
            f"{culprit} failed at iteration {self.iteration + 1}: {type(exc).__name__}: {first_line(exc)}"
            f"{written}{resume if written else ''}"
        )

    def _plugin_in_traceback(self, exc: Exception) -> str | None:
        """`KIND 'NAME' (package P)` of the innermost frame of `exc`'s traceback that runs a third-party
        component of this run (family, policy, regularizer, learner), or None."""
        config = self.config
        components: list[tuple[registry.Registry, str, Any]] = [
            (registry.envs, config.env, self.family),
            (registry.policies, config.policy or "", self.policy),
            (registry.algorithms, config.algo, self.learner),
            *(
                (registry.regularizers, name, reg)
                for name, (reg, _) in getattr(self.learner, "regularizers", {}).items()
            ),
        ]
        owners: dict[str, str] = {}
        for reg, name, obj in components:
            package = reg.package_of(name) if name in reg.names() else registry.distribution_of(obj)
            if package != registry.BUILTIN_DISTRIBUTION:
                owners[type(obj).__module__.split(".")[0]] = f"{reg.kind} {name!r} (package {package})"
        for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
            module = str(frame.f_globals.get("__name__", ""))
            if module.split(".")[0] in owners:
                return owners[module.split(".")[0]]
        return None


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run was started with; a metarl 0.1.0 flat config is migrated (its
    learner's and policy's keys move into `algo_kwargs` and `policy_kwargs`)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise MetarlError(f"{str(run_dir)!r} is not a metarl run directory (no {CONFIG_FILE})")
    return build_config(load_yaml(path), origins=[str(path)], lenient=[True])


def trainer_from_run(run_dir: Path, state: dict[str, Any]) -> Trainer:
    """The trainer of `run_dir` with a checkpoint's state loaded (every rank loads it; rank 0 writes)."""
    trainer = Trainer(load_run_config(run_dir))
    trainer.run_dir = run_dir if distributed.is_main() else None
    trainer.load_state(state)
    return trainer


def resume_trainer(
    run_dir: Path,
    warn: Callable[[str], None],
    layers: Sequence[Mapping[str, Any]] = (),
    origins: Sequence[str] = (),
) -> Trainer:
    """A trainer continuing `run_dir` from its newest readable checkpoint, holding its lock.

    `layers` (the command line's config layers) may change the keys in `RESUMABLE_KEYS`; a layer
    that changes any other key is refused in one line, before anything is written.
    """
    load_run_config(run_dir)  # a folder that is not a run fails here, before looking for checkpoints
    # Locked before the checkpoints are read: reading removes stale temporary files, which must not be
    # those of a writer still at work. Rank 0 by torchrun's RANK: the process group does not exist yet.
    lock = RunLock(run_dir) if distributed.launched_as_main() else None
    if lock is not None:
        lock.acquire(warn)
    trainer = trainer_from_run(run_dir, load_newest_checkpoint(run_dir, warn))
    trainer._lock = lock
    changes = resume_changes(trainer.config, layers, origins)
    if changes:
        trainer.config = trainer.config.replace(**changes)
    if trainer.run_dir is not None and load_yaml(run_dir / CONFIG_FILE) != trainer.config.to_dict():
        trainer.write_config()  # new resumable keys, or an older run's config.yaml migrated to this version's form
    return trainer


def resume_changes(config: Config, layers: Sequence[Mapping[str, Any]], origins: Sequence[str]) -> dict[str, Any]:
    """The run-level keys `layers` change in a run's resolved `config`; only `RESUMABLE_KEYS` may change."""
    if not any(layers):
        return {}
    from metarl.build import resolve_logger_kwargs

    merged = build_config(config.to_dict(), *layers, origins=[CONFIG_FILE, *origins]).to_dict()
    merged["logger_kwargs"] = {k: v for k, v in merged["logger_kwargs"].items() if k in merged["loggers"]}
    merged["logger_kwargs"] = resolve_logger_kwargs(merged["loggers"], merged["logger_kwargs"])
    old = config.to_dict()
    changed = {key: value for key, value in merged.items() if value != old[key]}
    refused = [key for key in changed if key not in RESUMABLE_KEYS]
    if refused:
        key = refused[0]
        raise ConfigError(
            f"config key {key!r} cannot change when a run resumes (the run has {short_repr(old[key])}, "
            f"asked {short_repr(merged[key])}); on resume only these may change: {', '.join(RESUMABLE_KEYS)}"
        )
    return changed
