"""Masked reductions of per-token losses to a scalar.

The three aggregations differ in how much weight a long response gets (Yu et al. 2025, DAPO, section 3.3;
Liu et al. 2025, Dr. GRPO):

* ``token-mean``            every loss token weighs the same:      sum_{i,t} m_it l_it / sum_{i,t} m_it
* ``seq-mean-token-mean``   every sequence weighs the same:        mean_i [ sum_t m_it l_it / sum_t m_it ]
* ``seq-mean-token-sum``    sequences weigh by their token count:  mean_i [ sum_t m_it l_it ]

With gradient accumulation or data parallelism, a micro-batch mean is not the mean of the whole mini-batch.
Pass the mini-batch-wide denominator (``num_tokens`` for token-mean, ``num_sequences`` for the two sequence
aggregations) and the micro-batch results sum to exactly the full-batch value.
"""

from __future__ import annotations

import torch

__all__ = ["AGGREGATIONS", "aggregate", "masked_mean", "aggregation_denominator"]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def _check(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is true; 0 when the mask is empty.

    Masked positions may hold NaN/inf (e.g. ``-inf`` log-probs of padding); they are selected away with
    ``torch.where`` before any arithmetic, so they never reach the result or its gradient.

    Args:
        values: any shape, e.g. ``(B, T)``.
        mask: same shape, bool or {0, 1}.

    Returns:
        0-dim tensor.
    """
    mask = mask.bool()
    selected = torch.where(mask, values, torch.zeros_like(values))
    return selected.sum() / mask.sum().clamp(min=1)


def aggregation_denominator(loss_mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """The denominator ``aggregate`` uses when none is given: token count or count of non-empty sequences.

    Args:
        loss_mask: ``(B, T)`` bool/{0,1}.
        aggregation: one of ``AGGREGATIONS``.

    Returns:
        0-dim float tensor. Sum it over micro-batches (and ranks) to get the mini-batch denominator.
    """
    _check(aggregation)
    mask = loss_mask.bool()
    if aggregation == "token-mean":
        return mask.sum().to(torch.float32)
    return (mask.sum(dim=-1) > 0).sum().to(torch.float32)


def aggregate(
    per_token: torch.Tensor,
    loss_mask: torch.Tensor,
    aggregation: str = "token-mean",
    denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar.

    Args:
        per_token: ``(B, T)`` per-token loss; masked entries may be non-finite.
        loss_mask: ``(B, T)`` bool/{0,1}; 1 on tokens that are trained.
        aggregation: ``token-mean`` | ``seq-mean-token-mean`` | ``seq-mean-token-sum`` (equations above).
        denominator: mini-batch-wide normaliser (tokens for token-mean, sequences otherwise). ``None`` uses
            this batch's own (``aggregation_denominator``). Sequences without any loss token are left out of
            the sequence count and contribute 0.

    Returns:
        0-dim tensor.
    """
    _check(aggregation)
    if per_token.shape != loss_mask.shape or per_token.dim() != 2:
        raise ValueError(
            f"per_token {tuple(per_token.shape)} and loss_mask {tuple(loss_mask.shape)} must be equal (B, T)"
        )
    mask = loss_mask.bool()
    selected = torch.where(mask, per_token, torch.zeros_like(per_token))
    if denominator is None:
        denominator = aggregation_denominator(mask, aggregation)
    if not torch.is_tensor(denominator):
        denominator = torch.tensor(float(denominator))
    denominator = denominator.to(per_token.device, per_token.dtype).clamp(min=1.0)
    if aggregation == "token-mean":
        return selected.sum() / denominator
    token_sum = selected.sum(dim=-1)
    if aggregation == "seq-mean-token-mean":
        token_sum = token_sum / mask.sum(dim=-1).clamp(min=1).to(per_token.dtype)
    return token_sum.sum() / denominator
