"""Built-in policies: MLPs returning a `torch.distributions.Distribution` (the `metarl.policies` group)."""

from metarl.policies.mlp import CategoricalMLP, GaussianMLP, default_policy_name

__all__ = ["CategoricalMLP", "GaussianMLP", "default_policy_name"]
