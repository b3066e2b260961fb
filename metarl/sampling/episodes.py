"""A batch of episodes for a meta-batch: tensors shaped [tasks, episodes, time, ...]."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch


@dataclass
class Episodes:
    """Episodes of several tasks. `mask` is 1 while an episode runs and 0 after it ended.

    Indexing with a task number gives that task's batch, with the leading task dimension removed;
    a slice gives a batch of those tasks.
    """

    observations: torch.Tensor  # [T, E, H, obs_dim]
    actions: torch.Tensor  # [T, E, H, *action_shape]
    rewards: torch.Tensor  # [T, E, H]
    mask: torch.Tensor  # [T, E, H]
    advantages: torch.Tensor | None = None  # [T, E, H], set by the learner
    success: torch.Tensor | None = None  # [T, E], 1 where the episode reached success; None if not reported

    def __len__(self) -> int:
        return self.rewards.shape[0]

    def _index(self, index: int | slice | tuple[slice, ...]) -> Episodes:
        """Every field indexed with `index` (a field that is None stays None)."""
        values: dict[str, Any] = {
            f.name: None if (v := getattr(self, f.name)) is None else v[index] for f in fields(self)
        }
        return Episodes(**values)

    def __getitem__(self, task: int | slice) -> Episodes:
        return self._index(task)

    def first_episodes(self, count: int) -> Episodes:
        """The first `count` episodes of every task."""
        return self._index((slice(None), slice(None, count)))

    def tasks(self) -> list[Episodes]:
        """One batch per task."""
        return [self[i] for i in range(len(self))]

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, [..., E]."""
        return (self.rewards * self.mask).sum(-1)

    @property
    def num_steps(self) -> int:
        """Environment steps taken in this batch."""
        return int(self.mask.sum().item())

    def with_advantages(self, advantages: torch.Tensor) -> Episodes:
        return replace(self, advantages=advantages)

    def require_advantages(self) -> torch.Tensor:
        """`advantages`, which a learner sets (`with_advantages`) before a loss uses them."""
        if self.advantages is None:
            raise ValueError("these episodes have no advantages: set them with `with_advantages`")
        return self.advantages


def step_weights(mask: torch.Tensor) -> torch.Tensor:
    """Each step's weight in its task's mean over (episodes, time): mask / steps taken."""
    return mask / mask.sum((-2, -1), keepdim=True).clamp(min=1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the last two dims (episodes, time) where `mask` is 1; one value per task."""
    return (values * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp(min=1.0)
