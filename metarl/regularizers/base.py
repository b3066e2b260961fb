"""The regularizer contract: a scalar term R(θ) added to the outer loss times its weight β."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from metarl.hyperparameters import configure

if TYPE_CHECKING:
    import torch
    from torch import nn

    from metarl.sampling.episodes import Episodes


@dataclass(frozen=True)
class RegularizerContext:
    """What a regularizer sees at one evaluation of the outer objective.

    `params` are the meta-parameters θ; `adapted_params` hold one dict per task, differentiable
    w.r.t. θ through the inner step; the episode lists hold one batch per task ([E, H, ...]).
    """

    policy: nn.Module
    params: dict[str, torch.Tensor]
    adapted_params: list[dict[str, torch.Tensor]]
    train_episodes: list[Episodes]
    valid_episodes: list[Episodes]


class Regularizer:
    """Base class of `metarl.regularizers` plugins.

    Constructed with the keys of its config mapping other than `weight` (`NAME: {weight: W, KEY: V}`),
    none by default. A subclass declares its keys as `metarl.hyperparameters.Hyperparameter`s, or
    takes them as constructor keywords of its own.
    """

    takes_declared_keys_only = True  # **hyperparameters holds only the declared keys

    def __init__(self, **hyperparameters: object) -> None:
        configure(self, hyperparameters, f"regularizer {type(self).__name__}")

    def __call__(self, ctx: RegularizerContext) -> torch.Tensor:
        """A scalar tensor, differentiable w.r.t. `ctx.params`."""
        raise NotImplementedError
