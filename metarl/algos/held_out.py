"""Adaptation on held-out tasks, the default for every gradient-based learner: the return after
0..K inner gradient steps, and the seed streams of validation and test tasks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from metarl.algos.adaptation import inner_loop, policy_gradient_loss
from metarl.config import Config
from metarl.policies.batched import Params, detach, stack
from metarl.sampling import make_vector_env, sample_episodes
from metarl.sampling.advantages import compute_advantages
from metarl.tasks import TaskDistribution

if TYPE_CHECKING:
    from metarl.sampling.workers import WorkerPool

# Seed-sequence spawn keys: training draws from SeedSequence(seed) itself, so these streams never overlap it.
VALIDATION_STREAM = 1
TEST_STREAM = 2


def held_out_rng(seed: int, stream: int) -> np.random.Generator:
    """A generator for validation or test tasks, disjoint from the training stream of the same seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean of `values` and the bounds of a 95 % normal interval of that mean (NaN bounds for one value)."""
    mean = float(values.mean())
    n = values.size
    half = 1.96 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return mean, mean - half, mean + half


@dataclass
class AdaptationResult:
    """Returns of each held-out task (rows) after 0..K inner steps (columns)."""

    tasks: list[dict[str, Any]]
    returns: np.ndarray  # [num_tasks, K + 1]
    adapted_params: Params  # stacked per task, after the K steps
    success: np.ndarray | None = None  # [num_tasks, K + 1] fraction of episodes that succeeded, if reported

    def summary(self) -> list[dict[str, float]]:
        """Per step: mean over tasks and a 95 % normal interval of that mean (and the success rate)."""
        rows = []
        for step, column in enumerate(self.returns.T):
            mean, low, high = mean_interval(column)
            rows.append({"step": step, "mean": mean, "ci_low": low, "ci_high": high})
            if self.success is not None:
                rows[-1]["success_rate"] = float(self.success[:, step].mean())
        return rows


def evaluate_adaptation(
    policy: nn.Module,
    family: TaskDistribution,
    config: Config,
    tasks: list[dict[str, Any]],
    steps: int,
    episodes: int,
    seed: int,
    device: torch.device,
    inner_lr: float | Params | None = None,
    workers: WorkerPool | None = None,
) -> AdaptationResult:
    """Adapt to every task for `steps` inner steps, sampling `episodes` per step.

    The step size is `inner_lr` (a number, or one tensor per parameter as Meta-SGD learns), by default
    the config's. The generic path steps its envs in `workers` when given.

    Step k's return is measured with the parameters after k steps, on the same episodes that the
    (k+1)-th step then adapts on, as in the MAML paper's evaluation.
    """
    env = make_vector_env(family, tasks, episodes, device, workers)
    horizon = config.horizon_for(family)
    rng = np.random.default_rng(seed)
    params: Params = stack(detach(dict(policy.named_parameters())), len(tasks))
    returns, successes = [], []
    try:
        for step in range(steps + 1):
            batch = sample_episodes(policy, params, env, horizon, int(rng.integers(2**31 - 1)))
            returns.append(batch.episode_returns().mean(-1).cpu().numpy())
            if batch.success is not None:
                successes.append(batch.success.mean(-1).cpu().numpy())
            if step < steps:
                batch = batch.with_advantages(
                    compute_advantages(batch, config.gamma, config.gae_lambda, config.normalize_advantages)
                )
                leaf = {n: p.detach().requires_grad_() for n, p in params.items()}
                lr = config.inner_lr if inner_lr is None else inner_lr
                # one first-order policy-gradient step (`inner_loop` takes Meta-SGD's per-parameter lr too)
                loss = partial(policy_gradient_loss, policy, episodes=batch)
                params = detach(inner_loop(leaf, loss, lr, 1, first_order=True)[0])
    finally:
        env.close()
    success = np.stack(successes, axis=1) if successes else None
    return AdaptationResult(tasks, np.stack(returns, axis=1), params, success)
