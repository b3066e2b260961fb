"""stable-baselines3 interop for the built-in MLP policies: the same network as SB3's PPO MlpPolicy.

`to_sb3_ppo` exports adapted weights as a PPO model (`PPO.load` opens the saved zip); `from_sb3_ppo`
imports a PPO actor into a metarl policy (used by the pretrained baseline).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from torch import nn

from metarl.errors import MetarlError
from metarl.policies import CategoricalMLP, GaussianMLP
from metarl.policies.batched import Params

if TYPE_CHECKING:
    from stable_baselines3 import PPO


def _built_in_mlp(policy: nn.Module) -> GaussianMLP | CategoricalMLP:
    """`policy` itself, if it is one of the built-in MLPs that SB3 interop supports."""
    if not isinstance(policy, (GaussianMLP, CategoricalMLP)):
        raise MetarlError(
            f"stable-baselines3 interop supports gaussian-mlp and categorical-mlp, not {type(policy).__name__}"
        )
    return policy


def sb3_policy_kwargs(policy: nn.Module) -> dict[str, Any]:
    """`policy_kwargs` of an SB3 MlpPolicy whose actor has the shape of `policy` (critic alike)."""
    policy = _built_in_mlp(policy)
    hidden = [m.out_features for m in policy.trunk if isinstance(m, nn.Linear)]
    activations = {type(m) for m in policy.trunk if not isinstance(m, nn.Linear)}
    return {
        "net_arch": {"pi": hidden, "vf": hidden},
        "activation_fn": activations.pop() if activations else nn.Tanh,
        "ortho_init": False,
    }


def sb3_parameter_names(policy: nn.Module) -> dict[str, str]:
    """Our parameter name -> the SB3 MlpPolicy state_dict key holding the same tensor."""
    names: dict[str, str] = {}
    for i, module in enumerate(_built_in_mlp(policy).trunk):
        if isinstance(module, nn.Linear):
            names |= {f"trunk.{i}.{k}": f"mlp_extractor.policy_net.{i}.{k}" for k in ("weight", "bias")}
    head = "mean" if isinstance(policy, GaussianMLP) else "logits"
    names |= {f"{head}.{k}": f"action_net.{k}" for k in ("weight", "bias")}
    if isinstance(policy, GaussianMLP):
        names["log_std"] = "log_std"
    return names


def from_sb3_ppo(policy: nn.Module, model: PPO) -> nn.Module:
    """A copy of `policy` (same class, shape and device) whose weights are the PPO model's actor."""
    theirs = model.policy.state_dict()
    converted = copy.deepcopy(policy)
    device = next(policy.parameters()).device
    converted.load_state_dict({ours: theirs[key].to(device) for ours, key in sb3_parameter_names(policy).items()})
    return converted


def to_sb3_ppo(policy: nn.Module, params: Params, env: gym.Env) -> PPO:
    """A PPO model whose actor has `params` (one task's parameters of `policy`); the critic is untrained."""
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, policy_kwargs=sb3_policy_kwargs(policy), device="cpu", verbose=0)
    target = model.policy.state_dict()
    with torch.no_grad():
        for ours, theirs in sb3_parameter_names(policy).items():
            value = params[ours].detach().cpu()
            if ours == "log_std" and isinstance(policy, GaussianMLP):  # only a Gaussian has a log std
                target[theirs] = value.clamp(min=policy.min_log_std)
            else:
                target[theirs] = value.clone()
    model.policy.load_state_dict(target)
    return model


def export_sb3(policy: nn.Module, params: Params, env: gym.Env, path: Path) -> Path:
    """Save `to_sb3_ppo(...)` as a zip at `path` (.zip appended when missing, as SB3 does), atomically.

    Parameters that are not all finite (an inner step that diverged) are refused, not exported.
    """
    import io

    from metarl.checkpoint import atomic_write

    bad = sorted(name for name, value in params.items() if not bool(torch.isfinite(value.detach()).all()))
    if bad:
        raise MetarlError(
            f"the adapted parameters are not all finite (NaN or infinite in {', '.join(bad)}): nothing exported; "
            "try fewer --steps or another --checkpoint"
        )
    model = to_sb3_ppo(policy, params, env)
    out = path if path.suffix == ".zip" else path.with_name(path.name + ".zip")
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_write(out, buffer.getvalue())  # an interrupted export leaves no half-written zip
    return out
