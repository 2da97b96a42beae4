"""Outcome-reward advantages for GRPO and its variants.

All functions are pure: tensors in, tensors out, no state. Rewards are one scalar per trajectory; the trainer
broadcasts the advantage to every loss-mask token of that trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["group_index", "grpo_advantages", "group_reward_stats"]

_STD_SCOPES = ("group", "batch")


def group_index(group_ids: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Map string group ids to dense integer indices in order of first appearance.

    Args:
        group_ids: one id per trajectory, length N. Equal ids mean "same prompt instance". Ids need not be
            contiguous in the batch (REX-RAG probes are appended after the originals of their group).

    Returns:
        (index, num_groups): ``index`` is a ``(N,)`` int64 tensor with values in ``[0, num_groups)``.
    """
    dense: dict[str, int] = {}
    index = [dense.setdefault(str(gid), len(dense)) for gid in group_ids]
    return torch.tensor(index, dtype=torch.long), len(dense)


def _group_mean_std(rewards: torch.Tensor, index: torch.Tensor, num_groups: int):
    """Per-trajectory group mean, unbiased group std and group size, each ``(N,)`` float."""
    rewards = rewards.to(torch.float64)
    counts = torch.zeros(num_groups, dtype=torch.float64, device=rewards.device).index_add_(
        0, index, torch.ones_like(rewards)
    )
    sums = torch.zeros(num_groups, dtype=torch.float64, device=rewards.device).index_add_(0, index, rewards)
    means = sums / counts
    centred = rewards - means[index]
    sq = torch.zeros(num_groups, dtype=torch.float64, device=rewards.device).index_add_(0, index, centred**2)
    # unbiased (Bessel) std like torch.std, the estimator the GRPO reference code uses; undefined for size 1
    std = torch.sqrt(sq / (counts - 1).clamp(min=1.0))
    return means[index], std[index], counts[index]


def grpo_advantages(
    rewards: torch.Tensor,
    group_ids: Sequence[str],
    scale_by_std: bool = True,
    eps: float = 1e-6,
    std_scope: str = "group",
) -> torch.Tensor:
    """Group-normalised outcome advantages (GRPO, Shao et al. 2024, arXiv 2402.03300, eq. 3 / section 4.1.2).

    For trajectory i in group g (all trajectories sampled for the same prompt instance)::

        A_i = (R_i - mean_g(R)) / (std(R) + eps)     scale_by_std=True
        A_i =  R_i - mean_g(R)                       scale_by_std=False  (Dr. GRPO, Liu et al. 2025)

    where ``std`` is the unbiased standard deviation of the rewards of group g (``std_scope="group"``) or of
    the whole batch (``std_scope="batch"``, the "group mean, batch std" variant of Lite PPO / TRL
    ``scale_rewards="batch"``).

    Groups may have different sizes. A group of size 1 has no baseline, so its advantage is 0 (the official
    verl code sets mean 0, std 1 and would use the raw reward as advantage, which pushes up any lone
    trajectory regardless of quality). Group ids must be unique per prompt *instance*: pooling two different
    questions under one id (the reference code's index collision) silently mixes their baselines.

    Args:
        rewards: ``(N,)`` one scalar reward per trajectory.
        group_ids: length-N sequence of group identifiers.
        scale_by_std: divide by the std (GRPO) or not (Dr. GRPO).
        eps: added to the std before dividing.
        std_scope: ``"group"`` or ``"batch"``; which rewards the std is taken over.

    Returns:
        ``(N,)`` advantages, same dtype as ``rewards`` (float32 if rewards are integer).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if len(group_ids) != rewards.shape[0]:
        raise ValueError(f"got {rewards.shape[0]} rewards but {len(group_ids)} group ids")
    if std_scope not in _STD_SCOPES:
        raise ValueError(f"std_scope must be one of {_STD_SCOPES}, got {std_scope!r}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; fix the reward function before computing advantages")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    if rewards.numel() == 0:
        return rewards.to(out_dtype)
    index, num_groups = group_index(group_ids)
    index = index.to(rewards.device)
    mean, group_std, size = _group_mean_std(rewards, index, num_groups)
    advantages = rewards.to(torch.float64) - mean
    if scale_by_std:
        if std_scope == "group":
            std = group_std
        else:
            std = (
                rewards.to(torch.float64).std()
                if rewards.numel() > 1
                else torch.zeros((), dtype=torch.float64)
            )
        advantages = advantages / (std + eps)
    advantages = torch.where(size > 1, advantages, torch.zeros_like(advantages))
    return advantages.to(out_dtype)


def group_reward_stats(
    rewards: torch.Tensor, group_ids: Sequence[str], tol: float = 1e-6
) -> dict[str, float]:
    """Diagnostics of the reward signal GRPO can learn from.

    A group whose rewards are all equal (all right or all wrong) has zero advantage everywhere and contributes
    no policy gradient; its share is the first thing to watch in small-scale runs.

    Args:
        rewards: ``(N,)`` rewards.
        group_ids: length-N group identifiers.
        tol: groups whose max - min reward is <= tol count as zero-variance.

    Returns:
        ``{"num_groups", "zero_variance_group_frac", "singleton_group_frac", "mean_group_size"}``.
    """
    if len(group_ids) != rewards.shape[0]:
        raise ValueError(f"got {rewards.shape[0]} rewards but {len(group_ids)} group ids")
    if rewards.numel() == 0:
        return {
            "num_groups": 0.0,
            "zero_variance_group_frac": 0.0,
            "singleton_group_frac": 0.0,
            "mean_group_size": 0.0,
        }
    index, num_groups = group_index(group_ids)
    values = rewards.detach().to(torch.float64).cpu()
    high = torch.full((num_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, index, values, "amax")
    low = torch.full((num_groups,), torch.inf, dtype=torch.float64).scatter_reduce(0, index, values, "amin")
    sizes = torch.bincount(index, minlength=num_groups)
    return {
        "num_groups": float(num_groups),
        "zero_variance_group_frac": float(((high - low) <= tol).double().mean()),
        "singleton_group_frac": float((sizes == 1).double().mean()),
        "mean_group_size": float(sizes.double().mean()),
    }
