"""The built-in Gaussian MLP written out with batched matrix products, for speed.

`batched` evaluates any policy with `vmap` over `functional_call` and `Distribution` objects; for a
meta-batch's few hundred observations per time step that bookkeeping costs more than the arithmetic.
For `GaussianMLP` with tanh or ReLU hidden layers (`supports`), this module computes the same values
with one batched matrix product per layer: log-probabilities and KLs (differentiable), actions, and
the second-order products of MAML-TRPO's step.

Second-order products: the TRPO step multiplies by Jᵢᵀ Fᵢ Jᵢ ten times per iteration
(Jᵢ = I − α∇²Lᵢ), and each product needs two Hessian-vector products of the inner policy-gradient
loss Lᵢ and one of the KL (the Fisher Fᵢ). Autograd's double backward goes through every
intermediate of the network again at each product. Written out layer by layer (Pearlmutter's
R-operator), the forward and backward quantities at the point are computed once, and each product
costs one tangent pass forward and one backward.

Parameters and vectors are dicts name -> tensor with a leading task dimension [T, ...]; observations
are [T, ..., obs_dim], flattened here to [T, N, obs_dim].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TypeGuard

import torch
from torch import nn

from metarl.policies.mlp import GaussianMLP

Params = dict[str, torch.Tensor]  # defined here, where `batched` (which imports this module) takes it from


def supports(policy: nn.Module) -> TypeGuard[GaussianMLP]:
    """Whether `policy` is a `GaussianMLP` whose hidden layers all use tanh or all use ReLU."""
    if type(policy) is not GaussianMLP:
        return False
    activations = {type(m) for m in list(policy.trunk)[1::2]}
    return len(activations) <= 1 and activations <= {nn.Tanh, nn.ReLU}


def log_probs(policy: GaussianMLP, params: Params, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|s) per observation, shaped like `obs` without its last dim."""
    network = GaussianMLPPass(policy, params, obs)
    error = actions.reshape(network.mean.shape) - network.mean
    log_std = network.log_std
    per_dim = -0.5 * error.square() * torch.exp(-2 * log_std) - log_std - 0.5 * math.log(2 * math.pi)
    return per_dim.sum(-1).reshape(obs.shape[:-1])


def kl(policy: GaussianMLP, params_p: Params, params_q: Params, obs: torch.Tensor) -> torch.Tensor:
    """KL(π_p(·|s) ‖ π_q(·|s)) per observation."""
    return KLFrom(policy, params_p, obs)(params_q)


class KLFrom:
    """q ↦ KL(π_p(·|s) ‖ π_q(·|s)) per observation, π_p's network evaluated once for every q."""

    def __init__(self, policy: GaussianMLP, params_p: Params, obs: torch.Tensor) -> None:
        self.policy, self.obs = policy, obs
        self.p = GaussianMLPPass(policy, params_p, obs)

    def __call__(self, params_q: Params) -> torch.Tensor:
        p, q = self.p, GaussianMLPPass(self.policy, params_q, self.obs)
        variance_p = torch.exp(2 * p.log_std)
        per_dim = q.log_std - p.log_std + (variance_p + (p.mean - q.mean).square()) / (2 * torch.exp(2 * q.log_std))
        return (per_dim - 0.5).sum(-1).reshape(self.obs.shape[:-1])


def sample(policy: GaussianMLP, params: Params, obs: torch.Tensor) -> torch.Tensor:
    """One action per observation, [T, ..., *action_shape]."""
    network = GaussianMLPPass(policy, params, obs)
    action = network.mean + torch.exp(network.log_std) * torch.randn_like(network.mean)
    return action.reshape(*obs.shape[:-1], *policy.action_shape)


@dataclass
class _Tangent:
    """The network's pre-activations, activations and mean pushed forward along a direction."""

    pre: list[torch.Tensor]
    hidden: list[torch.Tensor | None]  # [0] is the input's tangent: none
    mean: torch.Tensor


class GaussianMLPPass:
    """A `GaussianMLP` evaluated at stacked `params` on observations [T, ..., obs_dim]; each quantity
    is computed on first use and kept (differentiable when `params` require grad)."""

    def __init__(self, policy: GaussianMLP, params: Params, observations: torch.Tensor) -> None:
        self.policy = policy
        self.params = params
        self.observations = observations
        hidden = [f"trunk.{name}" for name, m in policy.trunk.named_children() if isinstance(m, nn.Linear)]
        self.layers = [*hidden, "mean"]
        self.tanh = bool(hidden) and isinstance(policy.trunk[1], nn.Tanh)

    @cached_property
    def hidden(self) -> list[torch.Tensor]:
        """Activations [T, N, width]: a₀ = x (the flattened observations), a₁, … of the hidden layers."""
        tasks = self.observations.shape[0]
        hidden = [self.observations.reshape(tasks, -1, self.observations.shape[-1])]
        for name in self.layers[:-1]:
            z = self._linear(name, hidden[-1])
            hidden.append(torch.tanh(z) if self.tanh else torch.relu(z))
        return hidden

    @cached_property
    def mean(self) -> torch.Tensor:
        """The action mean, [T, N, A] (actions flattened)."""
        return self._linear("mean", self.hidden[-1])

    @cached_property
    def slopes(self) -> list[torch.Tensor]:
        """Derivatives f'(z) of the hidden activations (tanh: 1 − a²; ReLU: 1 where a > 0)."""
        return [1 - a * a if self.tanh else (a > 0).to(a.dtype) for a in self.hidden[1:]]

    @cached_property
    def log_std(self) -> torch.Tensor:
        """The clamped log std, [T, 1, A]."""
        log_std = self.params["log_std"]
        return log_std.reshape(log_std.shape[0], 1, -1).clamp(min=self.policy.min_log_std)

    @cached_property
    def log_std_slope(self) -> torch.Tensor:
        """d(clamped log std)/d(log std parameter): 1, or 0 where the clamp holds it, [T, 1, A]."""
        log_std = self.params["log_std"]
        return (log_std >= self.policy.min_log_std).to(log_std.dtype).reshape(self.log_std.shape)

    @cached_property
    def precision(self) -> torch.Tensor:
        """1/σ², [T, 1, A]."""
        return torch.exp(-2 * self.log_std)

    def _linear(self, name: str, x: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        p = self.params if params is None else params
        return torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), x, p[f"{name}.weight"].mT)

    def tangent(self, v: Params) -> _Tangent:
        """Forward-mode pass along `v` (R-operator): pre-activation, activation and mean tangents."""
        hidden = self.hidden
        pre: list[torch.Tensor] = []
        tangents: list[torch.Tensor | None] = [None]
        for name, a, slope in zip(self.layers[:-1], hidden, self.slopes):
            rz = self._linear(name, a, v)
            if tangents[-1] is not None:
                rz = rz.baddbmm_(tangents[-1], self.params[f"{name}.weight"].mT)
            pre.append(rz)
            tangents.append(slope * rz)
        mean = self._linear("mean", hidden[-1], v)
        if tangents[-1] is not None:
            mean = mean.baddbmm_(tangents[-1], self.params["mean.weight"].mT)
        return _Tangent(pre, tangents, mean)

    def backward(self, mean_cotangent: torch.Tensor, along: _Along | None = None) -> Params:
        """Gradients of ⟨mean_cotangent, mean⟩ w.r.t. the network's weights and biases.

        With `along` (a loss's backward pass and a direction v), the tangent along v of that loss's
        gradient instead; `mean_cotangent` is then the tangent of ∂loss/∂mean.
        """
        hidden, slopes = self.hidden, self.slopes
        grads: Params = {}
        delta = mean_cotangent  # (tangent of the) cotangent of the layer's pre-activation
        for k in range(len(self.layers) - 1, -1, -1):
            name = self.layers[k]
            if k < len(self.layers) - 1:
                delta = delta * slopes[k]
                curvature = None if along is None else along.loss.curvature[k]
                if along is not None and curvature is not None:
                    delta = delta.addcmul_(curvature, along.tangent.pre[k])
            weight = torch.bmm(delta.mT, hidden[k])
            hidden_tangent = None if along is None else along.tangent.hidden[k]
            if along is not None and hidden_tangent is not None:
                weight = weight.baddbmm_(along.loss.deltas[k].mT, hidden_tangent)
            grads[f"{name}.weight"], grads[f"{name}.bias"] = weight, delta.sum(1)
            if k > 0:
                back = torch.bmm(delta, self.params[f"{name}.weight"])
                if along is not None:
                    back = back.baddbmm_(along.loss.deltas[k], along.v[f"{name}.weight"])
                delta = back
        return grads


@dataclass
class _LossBackward:
    """A loss's backward pass through the network: the cotangent of each layer's pre-activation, and
    for tanh layers the cotangent of its activation times tanh'' (what the slope's tangent multiplies)."""

    deltas: list[torch.Tensor]
    curvature: list[torch.Tensor | None]


@dataclass
class _Along:
    """What the second-order backward needs: the loss's backward pass, the direction, its tangent."""

    loss: _LossBackward
    v: Params
    tangent: _Tangent


class FisherProduct(GaussianMLPPass):
    """v ↦ ∇²_q Σ weights·KL(π_params ‖ π_q) v at q = `params` (detached): per task,
    Jμᵀ diag(w/σ²) Jμ v on the network and 2·Σw·v on the log std."""

    def __init__(self, policy: GaussianMLP, params: Params, observations: torch.Tensor, weights: torch.Tensor) -> None:
        super().__init__(policy, {n: p.detach() for n, p in params.items()}, observations)
        self.weights = weights.reshape(weights.shape[0], -1, 1)

    def __call__(self, v: Params) -> Params:
        active = self.log_std_slope
        tangent = self.tangent(v)
        grads = self.backward(self.weights * self.precision * tangent.mean)
        log_std = 2 * active * v["log_std"].reshape(active.shape) * self.weights.sum(1, keepdim=True)
        grads["log_std"] = log_std.reshape(v["log_std"].shape)
        return {name: grads[name] for name in v}


class PolicyGradientHessian(GaussianMLPPass):
    """v ↦ ∇²L v at `params` (detached) for each task's L = −Σₜ cₜ log π(aₜ|sₜ), c the weights;
    up to a constant L = Σₜ cₜ(½ Σ_d eₜ_d²/σ_d² + Σ_d log σ_d), e = a − μ.

    With `likelihood_ratio`, L = −Σₜ wₜ π(aₜ|sₜ)/π_o(aₜ|sₜ) (ProMP's LVC loss) with c = w·π/π_o at
    `params`: its Hessian adds −Σₜ cₜ gₜ gₜᵀ, gₜ = ∇ log π(aₜ|sₜ), to the one above.
    """

    def __init__(
        self,
        policy: GaussianMLP,
        params: Params,
        observations: torch.Tensor,
        actions: torch.Tensor,
        weights: torch.Tensor,
        likelihood_ratio: bool = False,
    ) -> None:
        super().__init__(policy, {n: p.detach() for n, p in params.items()}, observations)
        tasks = observations.shape[0]
        self.actions = actions.reshape(tasks, -1, self.policy.log_std.numel())
        self.coef = weights.reshape(tasks, -1, 1)
        self.likelihood_ratio = likelihood_ratio

    @cached_property
    def primal(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The error e = a − μ, and the loss's backward pass: each layer's pre-activation cotangent."""
        error = self.actions - self.mean
        deltas = [-self.coef * self.precision * error]
        for k in range(len(self.layers) - 1, 0, -1):
            back = torch.bmm(deltas[0], self.params[f"{self.layers[k]}.weight"])
            deltas.insert(0, back * self.slopes[k - 1])
        return error, deltas

    @cached_property
    def loss_backward(self) -> _LossBackward:
        """The backward pass with, for tanh layers, the activation cotangent times tanh''(z) = −2a·δz."""
        _, deltas = self.primal
        curvature: list[torch.Tensor | None] = [None] * len(self.layers)
        if self.tanh:
            for k in range(len(self.layers) - 1):
                curvature[k] = torch.mul(self.hidden[k + 1], deltas[k]).mul_(-2)
        return _LossBackward(deltas, curvature)

    def __call__(self, v: Params) -> Params:
        active, precision = self.log_std_slope, self.precision
        error, _ = self.primal
        v_log_std = active * v["log_std"].reshape(active.shape)
        tangent = self.tangent(v)
        scaled = self.coef * precision * error
        # ∂²L/∂μ² = c/σ², ∂²L/∂μ∂logσ = 2c·e/σ², ∂²L/∂logσ² = 2c·e²/σ² (per action dim)
        mean_tangent = self.coef * precision * tangent.mean + 2 * scaled * v_log_std
        log_std = 2 * active * (scaled * (tangent.mean + error * v_log_std)).sum(1, keepdim=True)
        if self.likelihood_ratio:
            # −Σ c g (gᵀv): gᵀv = Σ_d e/σ²·μ̇ + (e²/σ² − 1)·(log σ)˙, and g = (e/σ² on μ, e²/σ² − 1 on log σ)
            log_std_score = precision * error.square() - 1
            directional = (precision * error * tangent.mean + log_std_score * v_log_std).sum(-1, keepdim=True)
            weighted = self.coef * directional
            mean_tangent = mean_tangent - weighted * precision * error
            log_std = log_std - active * (weighted * log_std_score).sum(1, keepdim=True)
        grads = self.backward(mean_tangent, _Along(self.loss_backward, v, tangent))
        grads["log_std"] = log_std.reshape(v["log_std"].shape)
        return {name: grads[name] for name in v}
