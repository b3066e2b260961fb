"""Seconds for the inner adaptation and the TRPO outer step of one meta-batch: batched against a task loop.

(a) batched: the real path, `MAMLTRPO.adapt` and `MAMLTRPO._trpo_update` (all tasks at once; for this
    Gaussian MLP the closed-form batched products of `metarl.policies.closed_form`, Σᵢ Jᵢᵀ Fᵢ Jᵢ v)
(b) loop: the same math task by task with plain `functional_call`: inner step, per-task Jᵢ and Fᵢ
    products inside each Fisher-vector product, per-task line-search checks

Random episodes of a locomotion-sized policy (obs 20, act 6, 64×64 tanh); the same conjugate
gradient and line search (metarl.algos.trpo) serve both. Times include one device sync at the end.

  python scripts/bench_adaptation.py [--tasks 40] [--episodes 20] [--steps 200] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import torch
from torch.func import functional_call

from metarl.algos.base import SampledBatch
from metarl.algos.curvature import autograd_hessian
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.algos.trpo import flatten, natural_step, unflatten
from metarl.allocator import keep_freed_memory
from metarl.config import Config
from metarl.policies import GaussianMLP
from metarl.policies.batched import Params, detach
from metarl.sampling.episodes import Episodes, masked_mean
from metarl_envs.navigation import Navigation2D

OBS_DIM, ACT_DIM = 20, 6

# the MAML-TRPO settings of both paths
MAX_KL, CG_ITERS, CG_DAMPING, LS_MAX_STEPS, LS_BACKTRACK_RATIO = 0.01, 10, 1e-5, 15, 0.8


def random_episodes(tasks: int, episodes: int, steps: int, device: torch.device) -> Episodes:
    generator = torch.Generator().manual_seed(0)
    shape = (tasks, episodes, steps)
    return Episodes(
        observations=torch.randn(*shape, OBS_DIM, generator=generator).to(device),
        actions=torch.randn(*shape, ACT_DIM, generator=generator).to(device),
        rewards=torch.zeros(shape, device=device),
        mask=torch.ones(shape, device=device),
        advantages=torch.randn(shape, generator=generator).to(device),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched(policy: GaussianMLP, config: Config, train: Episodes, valid: Episodes) -> tuple[float, float, dict]:
    """The real path; returns (adaptation s, outer step s, metrics)."""
    # the family only sets the horizon, which these two calls do not use
    learner = MAMLTRPO(
        policy,
        Navigation2D(),
        config,
        device=train.rewards.device,
        max_kl=MAX_KL,
        cg_iters=CG_ITERS,
        cg_damping=CG_DAMPING,
    )
    params = dict(policy.named_parameters())
    start = time.perf_counter()
    adaptation = learner.adapt(params, train, first_order=False)
    batch = SampledBatch.of(policy, train, valid, adaptation, len(train))
    _sync(train.rewards.device)
    adapted = time.perf_counter()
    metrics = learner._trpo_update(params, adaptation, batch)
    _sync(train.rewards.device)
    return adapted - start, time.perf_counter() - adapted, metrics


def _distribution(policy: GaussianMLP, params: Params, obs: torch.Tensor) -> torch.distributions.Distribution:
    return functional_call(policy, params, (obs,))


def _task_loss(policy: GaussianMLP, params: Params, episodes: Episodes) -> torch.Tensor:
    """REINFORCE loss of one task's episodes ([E, H, ...]) without vmap."""
    logp = _distribution(policy, params, episodes.observations).log_prob(episodes.actions)
    return -masked_mean(logp * episodes.advantages, episodes.mask)


def _task_kl(policy: GaussianMLP, old: Params, new: Params, episodes: Episodes) -> torch.Tensor:
    kl = torch.distributions.kl_divergence(
        _distribution(policy, old, episodes.observations), _distribution(policy, new, episodes.observations)
    )
    return masked_mean(kl, episodes.mask)


def _inner_step(policy: GaussianMLP, params: Params, episodes: Episodes, lr: float, create_graph: bool):
    grads = torch.autograd.grad(_task_loss(policy, params, episodes), list(params.values()), create_graph=create_graph)
    return {n: p - lr * g for (n, p), g in zip(params.items(), grads)}, grads


def loop(policy: GaussianMLP, config: Config, train: Episodes, valid: Episodes) -> tuple[float, float, dict]:
    """The same update task by task; returns (adaptation s, outer step s, metrics)."""
    device, lr, num_tasks = train.rewards.device, config.inner_lr, len(train)
    params = dict(policy.named_parameters())
    theta = list(params.values())
    start = time.perf_counter()
    steps = [_inner_step(policy, params, train[i], lr, create_graph=True) for i in range(num_tasks)]
    old = [detach(adapted) for adapted, _ in steps]
    old_logp = [
        _distribution(policy, old[i], valid[i].observations).log_prob(valid[i].actions) for i in range(num_tasks)
    ]
    _sync(device)
    adapted_at = time.perf_counter()

    def objective(adapted: list[Params]) -> tuple[torch.Tensor, torch.Tensor]:
        surrogate, kl = 0.0, 0.0
        for i, task_params in enumerate(adapted):
            logp = _distribution(policy, task_params, valid[i].observations).log_prob(valid[i].actions)
            surrogate = surrogate - masked_mean(torch.exp(logp - old_logp[i]) * valid[i].advantages, valid[i].mask)
            kl = kl + _task_kl(policy, old[i], task_params, valid[i])
        return surrogate / num_tasks, kl / num_tasks

    loss, _ = objective([adapted for adapted, _ in steps])
    grad = flatten(torch.autograd.grad(loss, theta, retain_graph=True))
    fishers, points = [], []
    for i in range(num_tasks):
        at = {n: p.detach().requires_grad_() for n, p in old[i].items()}
        grads = torch.autograd.grad(
            _task_kl(policy, old[i], at, valid[i]) / num_tasks, list(at.values()), create_graph=True
        )
        fishers.append(autograd_hessian(at, dict(zip(at, grads))))
        points.append(at)

    def jacobian_product(i: int, v: torch.Tensor) -> torch.Tensor:
        """Jᵢ v = v − α ∇²Lᵢ v (symmetric, so also Jᵢᵀ v)."""
        vectors = list(unflatten(v, params).values())
        hvp = torch.autograd.grad(steps[i][1], theta, vectors, retain_graph=True, materialize_grads=True)
        return v - lr * flatten(hvp)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        total = sum(
            jacobian_product(i, flatten(list(fishers[i](unflatten(jacobian_product(i, v), points[i])).values())))
            for i in range(num_tasks)
        )
        return total + CG_DAMPING * v

    step = natural_step(grad, fvp, MAX_KL, CG_ITERS)
    current, direction, size = detach(params), unflatten(step, params), 1.0
    metrics = {"train/line_search_steps": float(LS_MAX_STEPS)}
    for attempt in range(1, LS_MAX_STEPS + 1):
        candidate = {n: (current[n] - size * direction[n]).requires_grad_() for n in current}
        adapted = [_inner_step(policy, candidate, train[i], lr, create_graph=False)[0] for i in range(num_tasks)]
        with torch.no_grad():
            loss_after, kl = objective(adapted)
            if loss.item() - loss_after.item() > 0 and kl.item() < MAX_KL:
                for name, p in params.items():
                    p.copy_(candidate[name])
                metrics = {"train/line_search_steps": float(attempt)}
                break
        size *= LS_BACKTRACK_RATIO
    _sync(device)
    return adapted_at - start, time.perf_counter() - adapted_at, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a training run does, for both paths
    torch.distributions.Distribution.set_default_validate_args(False)  # as in the batched path
    box = lambda n: gym.spaces.Box(-1.0, 1.0, (n,))  # noqa: E731
    torch.manual_seed(0)
    policy = GaussianMLP(box(OBS_DIM), box(ACT_DIM), hidden_sizes=[64, 64], activation="tanh").to(device)
    initial = {n: p.detach().clone() for n, p in policy.named_parameters()}
    config = Config(inner_lr=0.1)
    train = random_episodes(args.tasks, args.episodes, args.steps, device)
    valid = random_episodes(args.tasks, args.episodes, args.steps, device)
    print(
        f"torch {torch.__version__}, {args.device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{args.tasks} tasks × {args.episodes} episodes × {args.steps} steps, obs {OBS_DIM}, act {ACT_DIM}, 64×64 tanh"
    )
    results = {}
    for name, run in (("batched", batched), ("task loop", loop)):
        with torch.no_grad():
            for n, p in policy.named_parameters():
                p.copy_(initial[n])
        adapt_s, outer_s, metrics = run(policy, config, train, valid)
        moved = flatten([p.detach() - initial[n] for n, p in policy.named_parameters()])
        results[name] = (adapt_s, outer_s, metrics["train/line_search_steps"], moved)
    print(f"  {'path':<16}{'adaptation s':>14}{'outer step s':>14}{'total s':>10}{'line-search steps':>19}")
    for name, (adapt_s, outer_s, steps, _) in results.items():
        print(f"  {name:<16}{adapt_s:>14.2f}{outer_s:>14.2f}{adapt_s + outer_s:>10.2f}{steps:>19.0f}")
    loop_total, batched_total = (sum(results[k][:2]) for k in ("task loop", "batched"))
    print(f"  speed-up of batched over loop: {loop_total / batched_total:.2f}×")
    fast, slow = results["batched"][3], results["task loop"][3]
    if slow.norm() > 0:
        print(f"  relative difference of the two updates: {((fast - slow).norm() / slow.norm()).item():.1e}")


if __name__ == "__main__":
    main()
