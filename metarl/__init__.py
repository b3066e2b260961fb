"""metarl: gradient-based meta-reinforcement learning, batched across tasks with torch.func.

`import metarl` stays cheap: torch, gymnasium and plugins load only when first used.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "Trainer": "metarl.trainer",
    "Config": "metarl.config",
    "build_config": "metarl.config",
    "MetaLearner": "metarl.algos.base",
    "Hyperparameter": "metarl.hyperparameters",
    "TaskDistribution": "metarl.tasks",
    "Regularizer": "metarl.regularizers.base",
    "RegularizerContext": "metarl.regularizers.base",
    "VectorTaskEnv": "metarl.tasks",
    "Episodes": "metarl.sampling.episodes",
    "MetarlError": "metarl.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metarl' has no attribute {name!r}")
