"""Export an adapted built-in MLP policy as a stable-baselines3 PPO model (`PPO.load` opens it)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch
from torch import nn

from metarl.errors import MetarlError
from metarl.policies import CategoricalMLP, GaussianMLP
from metarl.policies.batched import Params


def to_sb3_ppo(policy: nn.Module, params: Params, env: gym.Env):
    """A PPO model whose actor has `params` (one task's parameters of `policy`); the critic is untrained."""
    from stable_baselines3 import PPO

    if not isinstance(policy, (GaussianMLP, CategoricalMLP)):
        raise MetarlError(
            f"export to stable-baselines3 supports gaussian-mlp and categorical-mlp, not {type(policy).__name__}"
        )
    linears = [m for m in policy.trunk if isinstance(m, nn.Linear)]
    activations = {type(m) for m in policy.trunk if not isinstance(m, nn.Linear)}
    hidden = [m.out_features for m in linears]
    model = PPO(
        "MlpPolicy",
        env,
        policy_kwargs={
            "net_arch": {"pi": hidden, "vf": hidden},
            "activation_fn": activations.pop() if activations else nn.Tanh,
            "ortho_init": False,
        },
        device="cpu",
        verbose=0,
    )
    head = "mean" if isinstance(policy, GaussianMLP) else "logits"
    names = {
        f"trunk.{i}": f"mlp_extractor.policy_net.{i}" for i, m in enumerate(policy.trunk) if isinstance(m, nn.Linear)
    }
    names[head] = "action_net"
    target = model.policy.state_dict()
    with torch.no_grad():
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                target[f"{theirs}.{kind}"] = params[f"{ours}.{kind}"].detach().cpu().clone()
        if isinstance(policy, GaussianMLP):
            target["log_std"] = params["log_std"].detach().cpu().clamp(min=policy.min_log_std).clone()
    model.policy.load_state_dict(target)
    return model


def export_sb3(policy: nn.Module, params: Params, env: gym.Env, path: Path) -> Path:
    """Save `to_sb3_ppo(...)` as a zip at `path` (SB3 appends .zip when missing)."""
    model = to_sb3_ppo(policy, params, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")
