"""A training run: build family, policy, regularizers and learner from a Config; iterate, log, checkpoint."""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from torch import nn

from metarl import __version__, distributed, registry
from metarl.algos.base import VALIDATION_METRIC
from metarl.allocator import keep_freed_memory
from metarl.checkpoint import (
    atomic_write,
    best_checkpoint_path,
    checkpoint_path,
    load_newest_checkpoint,
    save_checkpoint,
)
from metarl.config import Config
from metarl.errors import ConfigError, MetarlError, PluginError
from metarl.evaluation import VALIDATION_STREAM, AdaptationResult, held_out_rng
from metarl.logging import RunLogger
from metarl.policies.mlp import default_policy_name
from metarl.regularizers.base import Regularizer
from metarl.sampling.vector_env import check_spaces, space_signature
from metarl.tasks import TaskDistribution

CONFIG_FILE = "config.yaml"
VALIDATION_TAG = VALIDATION_METRIC
SUMMARY_TAGS = ["return/before_adaptation", "return/after_adaptation", VALIDATION_TAG]


def _construct(cls: type, what: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate a plugin class; a bad keyword is the user's ConfigError, anything else the plugin's."""
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    try:
        return cls(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception as exc:
        raise PluginError(f"{what} failed to construct: {type(exc).__name__}: {exc}") from exc


def make_family(config: Config) -> TaskDistribution:
    return _construct(registry.envs.load(config.env), f"env {config.env!r} (env_kwargs)", **config.env_kwargs)


def probe_spaces(family: TaskDistribution, name: str) -> tuple[gym.Space, gym.Space]:
    """Observation and action spaces of the family, from one env built with a throwaway generator."""
    try:
        task = family.sample_tasks(1, np.random.default_rng(0))[0]
        env = family.make_env(task)
    except Exception as exc:
        raise PluginError(f"env {name!r} failed to build an environment: {type(exc).__name__}: {exc}") from exc
    spaces = env.observation_space, env.action_space
    env.close()
    check_spaces(*spaces, where=f"env {name!r}")
    return spaces


def make_policy(config: Config, observation_space: gym.Space, action_space: gym.Space) -> nn.Module:
    """The configured policy; `hidden_sizes` and `activation` are passed when it accepts them."""
    name = config.policy or default_policy_name(action_space)
    cls = registry.policies.load(name)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: getattr(config, k) for k in ("hidden_sizes", "activation") if k in accepted}
    policy = _construct(cls, f"policy {name!r}", observation_space, action_space, **kwargs)
    _check_policy_output(policy, name, observation_space)
    return policy


def _check_policy_output(policy: nn.Module, name: str, observation_space: gym.Space) -> None:
    """The contract: forward(obs) is a Distribution with one log-probability per observation."""
    from metarl.policies.mlp import observation_dim

    obs = torch.zeros(3, observation_dim(observation_space))
    try:
        with torch.no_grad():
            pi = policy(obs)
            log_prob = pi.log_prob(pi.sample()) if isinstance(pi, torch.distributions.Distribution) else None
    except Exception as exc:
        raise PluginError(f"policy {name!r} failed on a batch of observations: {type(exc).__name__}: {exc}") from exc
    if log_prob is None:
        raise PluginError(f"policy {name!r} returned {type(pi).__name__}, not a torch.distributions.Distribution")
    if tuple(log_prob.shape) != (3,):
        raise PluginError(f"policy {name!r}: log_prob of 3 observations has shape {tuple(log_prob.shape)}, not (3,)")


def make_regularizers(config: Config) -> dict[str, tuple[Regularizer, float]]:
    return {
        name: (_construct(registry.regularizers.load(name), f"regularizer {name!r}"), float(weight))
        for name, weight in config.regularizers.items()
    }


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and Python; return the numpy Generator that samples tasks and env seeds."""
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(name: str) -> torch.device:
    """The configured device; under torchrun, joins the process group (each rank on its own GPU)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch.cuda.is_available() is False; use --device cpu")
    return distributed.init_from_env(torch.device(name))


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
        self.config = config
        keep_freed_memory()
        self.device = resolve_device(config.device)
        self.family = make_family(config)
        self.family_name, self.family_kwargs = config.env, config.env_kwargs
        observation_space, action_space = self.spaces = probe_spaces(self.family, config.env)
        self.rng = seed_everything(config.seed)
        self.policy = make_policy(config, observation_space, action_space).to(self.device)
        self.learner = _construct(
            registry.algorithms.load(config.algo),
            f"algorithm {config.algo!r}",
            self.policy,
            self.family,
            config,
            make_regularizers(config),
            self.device,
        )
        self.iteration = 0
        self.run_dir: Path | None = None
        self.validation_tasks = self.family.sample_tasks(
            config.eval_tasks, held_out_rng(config.seed, VALIDATION_STREAM)
        )
        self.best_validation = -math.inf
        #: set (e.g. by a signal handler) to stop after the iteration in progress
        self.stop_requested = False

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

    def start_run(self, logdir: Path) -> Path | None:
        """Create the run directory and write the resolved config into it (rank 0 only; None elsewhere)."""
        if not distributed.is_main():
            return None
        self.run_dir = new_run_dir(logdir, self.config)
        atomic_write(self.run_dir / CONFIG_FILE, yaml.safe_dump(self.config.to_dict(), sort_keys=False).encode())
        return self.run_dir

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
        assert self.run_dir is not None
        return save_checkpoint(checkpoint_path(self.run_dir, self.iteration), self.iteration, self.state())

    def evaluate(self, tasks: list[dict[str, Any]], steps: int, episodes: int, seed: int) -> AdaptationResult:
        """Returns on `tasks` after 0..`steps` adaptation steps, as the learner adapts (by default inner
        gradient steps with the learner's step size)."""
        return self.learner.evaluate(tasks, steps, episodes, seed)

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

        Logs and checkpoints when a run directory is set; validates in rank 0 (or the only process).
        Updates refused for non-finite values are counted; `max_nonfinite_updates` in a row stop the
        run with a MetarlError. Across processes, θ starts from rank 0's, and a stop asked of any
        rank stops all of them after the iteration.
        """
        logger = RunLogger(self.run_dir, self.config.to_dict(), SUMMARY_TAGS, self.iteration) if self.run_dir else None
        history, start, refused_in_a_row = [], time.perf_counter(), 0
        distributed.broadcast_module(self.policy)
        try:
            while self.iteration < iterations and not distributed.any_rank(self.stop_requested):
                seed_rank(self.config.seed, self.iteration)
                metrics = self.learner.step(self.rng)
                self.iteration += 1
                metrics["perf/wall_time_s"] = time.perf_counter() - start
                refused_in_a_row = refused_in_a_row + 1 if metrics["train/non_finite"] else 0
                every = self.config.eval_every
                validated = distributed.is_main() and bool(every) and self.iteration % every == 0
                metrics[VALIDATION_TAG] = self.validate() if validated else math.nan
                self.learner.end_iteration(metrics)
                improved = validated and metrics[VALIDATION_TAG] > self.best_validation
                if improved:
                    self.best_validation = metrics[VALIDATION_TAG]
                history.append(metrics)
                if logger is not None:
                    logger.log(self.iteration, metrics)
                    every = self.config.checkpoint_every
                    if (every and self.iteration % every == 0) or self.iteration == iterations:
                        self.save()
                    if improved:
                        save_checkpoint(best_checkpoint_path(self.run_dir), self.iteration, self.state())
                if on_iteration is not None:
                    on_iteration(self.iteration, metrics)
                if refused_in_a_row >= self.config.max_nonfinite_updates:
                    raise MetarlError(
                        f"stopped at iteration {self.iteration}: {refused_in_a_row} updates in a row were refused "
                        "because returns, advantages, gradients or the step were NaN or infinite"
                    )
        finally:
            if logger is not None:
                logger.close()
        return history


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run was started with."""
    from metarl.config import build_config, load_yaml

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise MetarlError(f"{str(run_dir)!r} is not a metarl run directory (no {CONFIG_FILE})")
    return build_config(load_yaml(path), origins=[str(path)])


def trainer_from_run(run_dir: Path, state: dict[str, Any]) -> Trainer:
    """The trainer of `run_dir` with a checkpoint's state loaded (every rank loads it; rank 0 writes)."""
    trainer = Trainer(load_run_config(run_dir))
    trainer.run_dir = run_dir if distributed.is_main() else None
    trainer.load_state(state)
    return trainer


def resume_trainer(run_dir: Path, warn: Callable[[str], None]) -> Trainer:
    """A trainer continuing `run_dir` from its newest readable checkpoint."""
    load_run_config(run_dir)  # a folder that is not a run fails here, before looking for checkpoints
    return trainer_from_run(run_dir, load_newest_checkpoint(run_dir, warn))
