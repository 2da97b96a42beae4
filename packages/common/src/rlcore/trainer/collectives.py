"""The three cross-rank reductions of the training loop; each is a no-op on a single process."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["max_over_ranks", "sum_over_ranks", "any_rank"]


def max_over_ranks(accelerator: Any, value: int) -> int:
    """The largest ``value`` of any rank (e.g. trajectory counts, so every rank runs as many passes)."""
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], device=accelerator.device)
    return int(accelerator.gather(tensor).max())


def sum_over_ranks(accelerator: Any, value: float) -> float:
    """The sum of ``value`` over ranks, in float64 (loss denominators)."""
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum"))


def any_rank(accelerator: Any, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (a stop signal seen by one rank)."""
    return max_over_ranks(accelerator, int(flag)) > 0
