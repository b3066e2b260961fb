"""MAML with a plain policy-gradient outer step (Finn et al. 2017, the "VPG" meta-optimizer).

The outer loss is the surrogate on the validation episodes at θᵢ'(θ) through the inner step (its
gradient at the sampled θᵢ' is the policy gradient through adaptation), plus weighted regularizers;
one Adam step per sampled batch. `ReduceLROnPlateau` lowers the outer learning rate when the monitored
return stops rising: the trainer's validation return when validation is on (`eval_every` > 0; the
scheduler steps on the iterations that validate), else the return after adaptation of every
iteration. The parameters at the best monitored value are kept in `best_state` (`restore_best()`).

Config keys: `inner_lr`, `num_inner_steps`, `first_order`, `outer_lr` (1e-3), `lr_factor` (0.5),
`lr_patience` (10 monitored values without improvement).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metarl.algos.base import VALIDATION_METRIC, GradientMetaLearner
from metarl.hyperparameters import NON_NEGATIVE_INT, OPEN_UNIT_INTERVAL, Hyperparameter


class MAMLVPG(GradientMetaLearner):
    """MAML with an Adam policy-gradient outer step, a plateau LR schedule and the best θ kept."""

    lr_factor = Hyperparameter(0.5, OPEN_UNIT_INTERVAL, "outer learning rate multiplier on a plateau")
    lr_patience = Hyperparameter(10, NON_NEGATIVE_INT, "monitored values without improvement before a cut")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=self.lr_factor, patience=self.lr_patience
        )
        self.best_value = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None

    def monitored(self, metrics: dict[str, float]) -> float:
        """The value the schedule follows (NaN on iterations without validation)."""
        if self.config.eval_every:
            return metrics.get(VALIDATION_METRIC, math.nan)
        return metrics["return/after_adaptation"]

    def end_iteration(self, metrics: dict[str, float]) -> None:
        value = self.monitored(metrics)
        if not math.isfinite(value):
            return
        self.scheduler.step(value)
        if value > self.best_value:
            self.best_value = value
            self.best_state = {n: t.detach().clone() for n, t in self.policy.state_dict().items()}

    def restore_best(self) -> None:
        """Load the parameters of the best monitored value into the policy (if any was seen)."""
        if self.best_state is not None:
            self.policy.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_value": self.best_value,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_value = float(state["best_value"])
        self.best_state = state["best_state"]
