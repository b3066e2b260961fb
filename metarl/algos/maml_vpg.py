"""MAML with a plain policy-gradient outer step (Finn et al. 2017, the "VPG" meta-optimizer).

The outer loss is the surrogate on the validation episodes at θᵢ'(θ) through the inner step (its
gradient at the sampled θᵢ' is the policy gradient through adaptation), plus weighted regularizers;
one Adam step per sampled batch. `ReduceLROnPlateau` lowers the outer learning rate when the trainer's
validation return stops rising (the scheduler steps on the iterations that validate). Without
validation (`eval_every: 0`) the rate stays at `outer_lr`: one batch's return after adaptation is too
noisy to call a plateau on, and the reference MAML-VPG (ProMP's run scripts) keeps a fixed rate.
The best parameters by validation are the trainer's `checkpoints/best.pt`, as for every learner.

Keys: `outer_lr` (1e-3), `lr_factor` (0.5; 1 keeps the rate fixed, as ProMP's reference does),
`lr_patience` (10 validations without improvement); from the run's config: `inner_lr`,
`num_inner_steps`, `first_order`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metarl.algos.base import GradientMetaLearner
from metarl.hyperparameters import FRACTION, NON_NEGATIVE_INT, Hyperparameter
from metarl.metrics import VALIDATION_RETURN


class MAMLVPG(GradientMetaLearner):
    """MAML with an Adam policy-gradient outer step and a plateau LR schedule."""

    lr_factor = Hyperparameter(0.5, FRACTION, "outer learning rate multiplier on a plateau (1: a fixed rate)")
    lr_patience = Hyperparameter(10, NON_NEGATIVE_INT, "validations without improvement before a cut")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = (
            None
            if self.lr_factor == 1.0
            else torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=self.lr_factor, patience=self.lr_patience
            )
        )

    def end_iteration(self, metrics: dict[str, float]) -> None:
        value = metrics.get(VALIDATION_RETURN, math.nan)  # NaN on iterations without validation
        if self.scheduler is None or not math.isfinite(value):
            return
        self.scheduler.step(value)

    def state_dict(self) -> dict[str, Any]:
        scheduler = {} if self.scheduler is None else {"scheduler": self.scheduler.state_dict()}
        return {**super().state_dict(), **scheduler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])  # 0.1.0's best_state, if any, is not needed
