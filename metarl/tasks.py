"""The task-family contract: sample task parameters, build a Gymnasium env for one task."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium
    import numpy as np
    import torch

    from metarl.sampling.vector_env import VectorTaskEnv


class TaskDistribution:
    """A named family of tasks (the `metarl.envs` entry-point group).

    Subclasses take keyword arguments from the config (none required) and implement `sample_tasks`
    and `make_env`. They may override `make_vector_env` with a faster path that steps many tasks at
    once; the per-task `make_env` path must always work.
    """

    #: default episode length, used when the config does not set `horizon`
    max_episode_steps: int = 100
    #: YAML file of reference hyperparameters: a path relative to the package of the subclass's module,
    #: or "package:path" for a file in another package
    config_file: str | None = None

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """`num_tasks` JSON-serialisable task parameter dicts drawn with `rng`."""
        raise NotImplementedError

    def make_env(self, task: dict[str, Any]) -> gymnasium.Env:
        """A Gymnasium env (Box or Discrete spaces) for one task."""
        raise NotImplementedError

    def make_vector_env(
        self, tasks: list[dict[str, Any]], episodes_per_task: int, device: torch.device
    ) -> VectorTaskEnv | None:
        """Optional batched fast path for all tasks at once; None means use `make_env` per episode."""
        return None

    @classmethod
    def reference_config(cls) -> dict[str, Any]:
        """The family's shipped hyperparameters (empty when it ships none)."""
        if cls.config_file is None:
            return {}
        import yaml

        package, _, path = cls.config_file.rpartition(":")
        package = package or cls.__module__.rpartition(".")[0] or cls.__module__
        text = resources.files(package).joinpath(path).read_text()
        return yaml.safe_load(text) or {}
