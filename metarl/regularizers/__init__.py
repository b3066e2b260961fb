"""Built-in regularizers (the `metarl.regularizers` entry-point group)."""

from __future__ import annotations

import torch

from metarl.regularizers.adapted import Consistency, Entropy, KLPrior
from metarl.regularizers.base import Regularizer, RegularizerContext

__all__ = ["Consistency", "Entropy", "KLPrior", "L2Anchor", "Regularizer", "RegularizerContext"]


class L2Anchor(Regularizer):
    """Mean over tasks of the squared L2 distance between adapted and meta parameters:
    R = (1/T) Σᵢ ‖θᵢ' − θ‖²."""

    def __call__(self, ctx: RegularizerContext) -> torch.Tensor:
        distances = []
        for adapted in ctx.adapted_params:
            squares = [((adapted[name] - theta) ** 2).sum() for name, theta in ctx.params.items()]
            distances.append(sum(squares[1:], start=squares[0]))
        return torch.stack(distances).mean()
