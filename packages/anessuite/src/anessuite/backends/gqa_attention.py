"""Attention for the in-process backend: transformers' ``sdpa`` with grouped key/value heads passed to the kernel
uncopied, registered through transformers' own attention and mask interfaces."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["GQA_SDPA", "use_gqa_sdpa"]

# Registered with transformers' attention and mask interfaces (their extension points) by ``use_gqa_sdpa``.
GQA_SDPA = "sdpa_gqa"


def _sdpa_gqa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention, except that grouped key/value heads always go to the kernel as they are
    (``enable_gqa``). The stock path copies them ``num_attention_heads / num_key_value_heads`` times whenever
    a mask is given, i.e. in every padded batch: on CPU that copy of the whole cache was 64% of a 16-row
    decode step of SmolLM2 (9 query heads over 3 key/value heads). Query ``(batch, heads, q, dim)``, key and
    value ``(batch, kv_heads, kv, dim)``; returns ``(batch, q, heads, dim)``."""
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = query.shape[2] > 1 and attention_mask is None and is_causal
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return output.transpose(1, 2).contiguous(), None


def use_gqa_sdpa(model: Any) -> bool:
    """Switch a model that uses transformers' ``sdpa`` attention with grouped key/value heads to
    :func:`_sdpa_gqa_attention`; True when it did. The same kernel runs with and without padding, so batched
    and one-at-a-time greedy answers stay equal."""
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    if config._attn_implementation != "sdpa" or getattr(config, "num_key_value_heads", heads) == heads:
        return False
    AttentionInterface.register(GQA_SDPA, _sdpa_gqa_attention)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
    model.set_attn_implementation(GQA_SDPA)
    return True
