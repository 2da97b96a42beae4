"""Per-token KL estimators, entropy and log-probs from logits.

KL estimators follow J. Schulman, "Approximating KL Divergence" (2020). Tokens are sampled from pi_theta, and
with the log-ratio ``l_t = log pi_ref(t) - log pi_theta(t)``::

    k1 = -l_t                        unbiased, high variance, can be negative
    k2 = l_t^2 / 2                   biased, low variance, >= 0
    k3 = (exp(l_t) - 1) - l_t        unbiased, low variance, >= 0   ("low_var_kl" in verl)

Each estimates KL(pi_theta || pi_ref) per token; the trainer aggregates with the loss mask and scales by
``kl_coef``.
"""

from __future__ import annotations

import torch

__all__ = ["KL_KINDS", "kl_penalty", "entropy_from_logits", "token_logprobs_from_logits"]

KL_KINDS = ("k1", "k2", "k3")


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kind: str = "k3",
    loss_mask: torch.Tensor | None = None,
    clamp: float | None = 10.0,
) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate (equations in the module docstring).

    For k3 the log-ratio is clamped to [-20, 20] before ``exp`` and the result to ``[-clamp, clamp]``
    (verl's ``low_var_kl`` uses 10), which bounds the gradient of rare tokens the reference finds very
    unlikely. ``clamp`` is ignored for k1/k2.

    Args:
        logprobs: ``(B, T)`` log pi_theta of the sampled tokens (carries the gradient).
        ref_logprobs: ``(B, T)`` log pi_ref of the same tokens.
        kind: ``"k1"`` | ``"k2"`` | ``"k3"``.
        loss_mask: optional ``(B, T)``; masked positions are 0 in the output (inputs there may be -inf).
        clamp: bound on the k3 value; ``None`` disables it.

    Returns:
        ``(B, T)`` per-token estimates.
    """
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ"
        )
    ref_logprobs = ref_logprobs.detach().to(logprobs.dtype)
    if loss_mask is not None:
        mask = loss_mask.bool()
        zeros = torch.zeros_like(logprobs)
        logprobs = torch.where(mask, logprobs, zeros)
        ref_logprobs = torch.where(mask, ref_logprobs, zeros)
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    log_ratio = log_ratio.clamp(-20.0, 20.0)
    k3 = torch.expm1(log_ratio) - log_ratio
    return k3.clamp(-clamp, clamp) if clamp is not None else k3


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution softmax(logits) over the last dimension.

    ``H = logsumexp(z) - sum_v softmax(z)_v z_v``. Vocabulary entries with ``-inf`` logits (banned tokens)
    have probability 0 and are dropped from the sum instead of producing ``0 * -inf = NaN``.

    Args:
        logits: ``(..., V)``.

    Returns:
        ``(...)`` entropies in nats, computed in at least float32.
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    probs = torch.softmax(logits, dim=-1)
    finite = torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))
    return torch.logsumexp(logits, dim=-1) - (probs * finite).sum(dim=-1)


def token_logprobs_from_logits(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probability of ``token_ids`` under softmax(logits / temperature).

    ``log p(y_t) = z_t[y_t] / tau - logsumexp(z_t / tau)``; no full ``log_softmax`` tensor is kept, which
    saves one ``(B, T, V)`` buffer. Computed in at least float32.

    Args:
        logits: ``(B, T, V)`` logits predicting position t (already shifted by the caller).
        token_ids: ``(B, T)`` int64 ids of the tokens actually at position t.
        temperature: sampling temperature tau > 0 the tokens were drawn at.

    Returns:
        ``(B, T)`` log-probs.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match token_ids {tuple(token_ids.shape)}")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
