"""Probe filtering and the adaptive probe budget.

After pi_old log-probs are known, probes are ranked by how natural their inserted prompt is for the current policy
(the mean log pi_old over the inserted tokens) and only the top K are kept:

    K = floor(floor(N_orig * keep_ratio) / world_size) * world_size         (all probes if fewer exist, also
                                                                              rounded down to the world size)

keep_ratio follows an exponential moving average of the kept probes' accuracy, updated after each step:

    r_{t+1} = decay * r_t + (1 - decay) * acc_probe_t,    r_0 = 0.08, decay = 0.9,   acc_probe_t = 0 if none kept

(the official trainer's pandas ``ewm(alpha=0.1, adjust=False)``), optionally clamped to ``[min_ratio, max_ratio]``.
The official trainer has neither bound; a floor keeps probes alive when the kept-probe accuracy is near 0 (with
16 originals per step the unbounded EMA falls below 1/16 within about 12 steps and K becomes 0 for good). The
filter never looks at rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def inserted_mean_logprob(old_logprobs: torch.Tensor, inserted_mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean of ``old_logprobs`` (B, T) over ``inserted_mask`` (B, T) positions; -inf for rows with none."""
    mask = inserted_mask.to(old_logprobs.dtype)
    counts = mask.sum(dim=1)
    totals = (old_logprobs * mask).sum(dim=1)
    return torch.where(counts > 0, totals / counts.clamp(min=1), torch.full_like(totals, -math.inf))


def probe_budget(num_originals: int, keep_ratio: float, world_size: int = 1) -> int:
    """K = floor(N_orig * keep_ratio) rounded down to a multiple of world_size. floor(2560*0.08)=204 -> 200 (ws 8)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if keep_ratio < 0:
        raise ValueError(f"keep_ratio must be >= 0, got {keep_ratio}")
    # a tiny epsilon so that products like 25 * 0.08 = 2.0000000000000004 or 1.9999999999999998 floor as intended
    budget = math.floor(num_originals * keep_ratio + 1e-9)
    return (budget // world_size) * world_size


def select_probes(
    scores: Sequence[float], num_originals: int, keep_ratio: float, world_size: int = 1
) -> list[int]:
    """Indices (into ``scores``) of the probes to keep, best first; ties keep the earlier probe.

    The number kept is min(K, len(scores)) rounded down to a multiple of ``world_size``.
    """
    budget = probe_budget(num_originals, keep_ratio, world_size)
    keep = min(budget, len(scores))
    keep = (keep // world_size) * world_size
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order[:keep]


class KeepRatioEMA:
    """Adaptive probe keep ratio: r <- decay * r + (1 - decay) * acc, optionally clamped to [min_ratio, max_ratio]."""

    def __init__(
        self,
        initial: float = 0.08,
        decay: float = 0.9,
        max_ratio: float | None = None,
        min_ratio: float | None = None,
    ):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        if min_ratio is not None and min_ratio < 0:
            raise ValueError(f"keep_ratio_min must be >= 0, got {min_ratio}")
        if min_ratio is not None and max_ratio is not None and min_ratio > max_ratio:
            raise ValueError(f"keep_ratio_min ({min_ratio}) exceeds keep_ratio_max ({max_ratio})")
        self.decay = decay
        self.max_ratio = max_ratio
        self.min_ratio = min_ratio
        self.value = self._cap(initial)

    def _cap(self, ratio: float) -> float:
        if self.max_ratio is not None:
            ratio = min(ratio, self.max_ratio)
        return ratio if self.min_ratio is None else max(ratio, self.min_ratio)

    def update(self, probe_accuracy: float) -> float:
        """Fold one step's kept-probe accuracy (0 when none were kept) into the ratio; returns the new ratio."""
        if not 0.0 <= probe_accuracy <= 1.0:
            raise ValueError(f"probe accuracy must lie in [0, 1], got {probe_accuracy}")
        self.value = self._cap(self.decay * self.value + (1.0 - self.decay) * probe_accuracy)
        return self.value

    def state_dict(self) -> dict:
        return {
            "value": self.value,
            "decay": self.decay,
            "max_ratio": self.max_ratio,
            "min_ratio": self.min_ratio,
        }

    def load_state_dict(self, state: dict) -> None:
        self.value, self.decay, self.max_ratio = state["value"], state["decay"], state["max_ratio"]
        self.min_ratio = state.get("min_ratio")  # checkpoints written before the floor existed have none
