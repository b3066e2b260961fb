"""Short seeded MAML-TRPO runs must learn: adaptation helps, and both returns rise."""

import numpy as np
import pytest

from metarl.config import build_config
from metarl.trainer import Trainer
from metarl_envs.navigation import Navigation2D


def _train(iterations: int, **overrides) -> list[dict[str, float]]:
    config = build_config(Navigation2D.reference_config(), {"seed": 1, **overrides})
    return Trainer(config).train(iterations)


@pytest.mark.parametrize("overrides", [{}, {"cg_subsample": 1.0}], ids=["default", "exact-fisher"])
def test_navigation_default_config_learns_to_adapt(overrides):
    history = _train(10, **overrides)
    before = np.array([m["return/before_adaptation"] for m in history])
    after = np.array([m["return/after_adaptation"] for m in history])
    assert after[-3:].mean() > before[-3:].mean() + 5.0  # one gradient step helps on new tasks
    assert after[-3:].mean() > after[0] + 30.0  # and meta-training made it better than at the start
    assert all(m["train/line_search_accepted"] == 1.0 for m in history[:3])


def test_first_order_also_learns():
    history = _train(6, first_order=True, meta_batch_size=10, fast_batch_size=10)
    after = [m["return/after_adaptation"] for m in history]
    assert np.mean(after[-2:]) > after[0] + 15.0


def test_navigation_matches_reference_curve():
    """pytorch-maml-rl's return after adaptation: about −25 at iteration 10, −17 at 25, −16 at 50
    (default config, about 30 s)."""
    assert build_config({"env": "navigation-2d"}, reference=True).algo_kwargs["cg_subsample"] == 0.5
    history = _train(50)
    after = [m["return/after_adaptation"] for m in history]
    assert np.mean(after[8:11]) > -27
    assert np.mean(after[23:26]) > -19
    assert np.mean(after[47:50]) > -18
