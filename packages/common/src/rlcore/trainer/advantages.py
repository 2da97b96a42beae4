"""Phase 4 of a training step: group-normalised advantages and the padded training batch.

Groups never span ranks: all ``num_generations`` rollouts of a prompt are generated on the same rank, so the
group statistics need no communication.
"""

from __future__ import annotations

from typing import Any

import torch

from rlcore.objectives import group_reward_stats, grpo_advantages
from rlcore.rollout import Trajectory
from rlcore.trainer.batching import TrainBatch, collate
from rlcore.trainer.config import ObjectiveConfig
from rlcore.trainer.metrics import MetricSums

__all__ = ["build_batch"]


def build_batch(
    obj: ObjectiveConfig,
    trajectories: list[Trajectory],
    rewards: torch.Tensor,
    pad_token_id: int,
    device: torch.device | str | Any,
    sums: MetricSums,
) -> TrainBatch:
    """GRPO advantages of ``rewards`` ``(B,)`` by group id, the share of zero-variance groups, and the batch.

    ``groups/zero_variance_frac`` is weighted by the number of groups, so the cross-rank mean is over groups.
    """
    group_ids = [t.group_id for t in trajectories]
    advantages = grpo_advantages(rewards, group_ids, obj.scale_by_std, obj.advantage_eps, obj.std_scope)
    group_stats = group_reward_stats(rewards, group_ids)
    sums.add("groups/zero_variance_frac", group_stats["zero_variance_group_frac"], group_stats["num_groups"])
    return collate(trajectories, advantages, pad_token_id).to(device)
