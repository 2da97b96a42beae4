"""RL objectives as pure tensor functions: GRPO advantages, PPO clipped loss, aggregation, KL, entropy.

Shapes used throughout: N trajectories (1-D rewards/advantages), B sequences by T response positions for
per-token tensors, V vocabulary size. Every function is stateless and differentiable where it should be.
"""

from rlcore.objectives.advantages import group_index, group_reward_stats, grpo_advantages
from rlcore.objectives.aggregation import AGGREGATIONS, aggregate, aggregation_denominator, masked_mean
from rlcore.objectives.kl import KL_KINDS, entropy_from_logits, kl_penalty, token_logprobs_from_logits
from rlcore.objectives.policy import MAX_LOG_RATIO, policy_loss, truncated_importance_weights

__all__ = [
    "AGGREGATIONS",
    "KL_KINDS",
    "MAX_LOG_RATIO",
    "aggregate",
    "aggregation_denominator",
    "entropy_from_logits",
    "group_index",
    "group_reward_stats",
    "grpo_advantages",
    "kl_penalty",
    "masked_mean",
    "policy_loss",
    "token_logprobs_from_logits",
    "truncated_importance_weights",
]
