"""Per-token log-probs (and entropies) of response tokens under a causal LM."""

from __future__ import annotations

import torch

from rlcore.objectives import entropy_from_logits, token_logprobs_from_logits
from rlcore.trainer.batching import TrainBatch

__all__ = ["response_logprobs", "batched_response_logprobs"]


def response_logprobs(
    model: torch.nn.Module,
    batch: TrainBatch,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens, ``log softmax(z / tau)[y_t]``, and optionally their entropies.

    Only the last ``T + 1`` positions go through the LM head (``logits_to_keep``): the logit at column
    ``P - 1 + t`` predicts response token t, so the ``(B, T, V)`` logits never include the prompt.

    Args:
        model: a ``transformers`` causal LM (possibly wrapped by DDP/DeepSpeed/PEFT). Mixed precision is the
            caller's business (``accelerator.autocast()``).
        batch: a :class:`TrainBatch` already on the model's device.
        temperature: the sampling temperature tau; log-probs are of the tempered distribution the tokens were
            drawn from (top-k/top-p truncation is not applied: the policy being trained is softmax(z / tau)).
        compute_entropy: also return the per-token entropy of softmax(z / tau).
        entropy_grad: keep the entropy in the autograd graph (only needed for an entropy bonus; otherwise it
            is computed under no_grad, which avoids holding a second ``(B, T, V)`` buffer for backward).

    Returns:
        ``(logprobs, entropy)``: ``(B, T)`` float32 each (entropy None unless asked). Values at padding
        positions are finite but meaningless; mask them.
    """
    width = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=width + 1,
    )
    logits = out.logits[:, :-1, :]  # (B, T, V): drop the logit after the last column
    logprobs = token_logprobs_from_logits(logits, batch.response_ids, temperature)
    entropy = None
    if compute_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            source = logits if entropy_grad else logits.detach()
            entropy = entropy_from_logits(source.float() / temperature if temperature != 1.0 else source)
    return logprobs, entropy


@torch.no_grad()
def batched_response_logprobs(
    model: torch.nn.Module,
    batch: TrainBatch,
    micro_batch_size: int,
    temperature: float = 1.0,
    min_forward_calls: int = 0,
) -> torch.Tensor:
    """``response_logprobs`` without gradients over the whole batch in chunks of ``micro_batch_size`` rows.

    ``min_forward_calls`` pads with placeholder forwards (one padding row each) up to that many calls: under
    ZeRO-3 every forward is a collective, so all ranks must make the same number of calls.

    Returns:
        ``(B, T)`` float32 on the batch's device, aligned with ``batch.response_ids`` (full width T).
    """
    width = batch.response_ids.shape[1]
    out = torch.zeros(batch.num_rows, width, dtype=torch.float32, device=batch.input_ids.device)
    calls = 0
    for start in range(0, batch.num_rows, micro_batch_size):
        rows = list(range(start, min(start + micro_batch_size, batch.num_rows)))
        logprobs, _ = response_logprobs(model, batch.select(rows), temperature)
        out[start : start + len(rows), : logprobs.shape[1]] = logprobs
        calls += 1
    for _ in range(calls, min_forward_calls):
        response_logprobs(model, batch.select([]), temperature)
    return out
