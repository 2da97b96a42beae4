"""PPO clipped surrogate with clip-higher, dual clip, behaviour policies and truncated importance weights.

Shapes: B sequences (trajectories) by T response positions. ``loss_mask`` is 1 on the tokens that are trained
(model tokens and REX-RAG inserted tokens); everything else (padding, retrieved passages, feedback) may hold
any value in the log-prob tensors, including ``-inf`` or ``-200``: masked positions are replaced by 0 with
``torch.where`` before any arithmetic, so they reach neither the loss nor its gradient.
"""

from __future__ import annotations

import math

import torch

from rlcore.objectives.aggregation import aggregate, masked_mean

__all__ = ["policy_loss", "truncated_importance_weights", "MAX_LOG_RATIO"]

# exp(20) ~ 4.9e8: a log-ratio beyond this is numerically meaningless and would overflow float16/bfloat16.
MAX_LOG_RATIO = 20.0


def _per_token_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``(B, T)`` advantages -> ``(B, T)`` matching ``like``."""
    if advantages.dim() == 1:
        if advantages.shape[0] != like.shape[0]:
            raise ValueError(f"advantages {tuple(advantages.shape)} do not match batch size {like.shape[0]}")
        advantages = advantages.unsqueeze(-1)
    elif advantages.shape != like.shape:
        raise ValueError(f"advantages {tuple(advantages.shape)} must be (B,) or (B, T) = {tuple(like.shape)}")
    return advantages.to(like.dtype).expand_as(like)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    behaviour_logprobs: torch.Tensor | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
    importance_weights: torch.Tensor | None = None,
    denominator: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped policy loss (Schulman et al. 2017, eq. 7) with clip-higher and dual clip.

    Per token, with b the behaviour log-prob (``behaviour_logprobs`` when given, else ``old_logprobs``)::

        r_t  = exp(log pi_theta(t) - b_t)                                    (log-ratio clamped to +-20)
        l_t  = max(-A_t r_t,  -A_t clip(r_t, 1 - eps_low, 1 + eps_high))     (clip-higher: DAPO, arXiv 2503.14476)
        l_t  = min(l_t, -A_t c)   where A_t < 0                              (dual clip c > 1: Ye et al. 2020)
        l_t  = w_t l_t                                                       (optional detached weights, e.g. TIS)
        loss = aggregate(l, loss_mask, aggregation)

    ``behaviour_logprobs`` is how an importance correction plugs in without touching this function: REX-RAG's
    mixture policy b = log((1 - alpha) pi_old + alpha mu) goes here, and the clip is then applied to pi_theta / b.
    ``old_logprobs`` are still used for the drift metric ``approx_kl``.

    Args:
        logprobs: ``(B, T)`` log pi_theta of the taken tokens; carries the gradient.
        old_logprobs: ``(B, T)`` log pi_old (policy before this step's updates), no gradient.
        advantages: ``(B,)`` per sequence or ``(B, T)`` per token.
        loss_mask: ``(B, T)`` bool/{0,1}.
        behaviour_logprobs: optional ``(B, T)`` log-prob of the policy that actually generated the tokens.
        eps_low: lower clip range, ratio clipped at ``1 - eps_low``.
        eps_high: upper clip range, ratio clipped at ``1 + eps_high``.
        dual_clip: optional c > 1 bounding the loss of negative-advantage tokens at ``-A c``.
        aggregation: see ``rlcore.objectives.aggregation``.
        importance_weights: optional ``(B, T)`` detached per-token weights (``truncated_importance_weights``).
        denominator: mini-batch-wide aggregation denominator for gradient accumulation (see ``aggregate``).

    Returns:
        ``(loss, metrics)``: 0-dim loss; metrics are detached 0-dim tensors: ``clip_frac_low``,
        ``clip_frac_high``, ``dual_clip_frac``, ``ratio_mean``, ``ratio_max``, ``approx_kl`` (k3 estimate of
        KL(pi_old || pi_theta)), ``num_tokens``.
    """
    if logprobs.dim() != 2 or logprobs.shape != loss_mask.shape or old_logprobs.shape != loss_mask.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)}, old_logprobs {tuple(old_logprobs.shape)} and loss_mask "
            f"{tuple(loss_mask.shape)} must all be (B, T)"
        )
    if behaviour_logprobs is not None and behaviour_logprobs.shape != loss_mask.shape:
        raise ValueError(
            f"behaviour_logprobs {tuple(behaviour_logprobs.shape)} must be {tuple(loss_mask.shape)}"
        )
    if not (0.0 <= eps_low < 1.0) or eps_high < 0.0:
        raise ValueError(
            f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}"
        )
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (it bounds -A*ratio for A < 0), got {dual_clip}")

    mask = loss_mask.bool()
    zeros = torch.zeros_like(logprobs)
    reference = old_logprobs if behaviour_logprobs is None else behaviour_logprobs
    current = torch.where(mask, logprobs, zeros)
    reference = torch.where(mask, reference.detach().to(logprobs.dtype), zeros)
    log_ratio = (current - reference).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    adv = torch.where(mask, _per_token_advantages(advantages.detach(), logprobs), zeros)

    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * dual_clip), per_token)
    if importance_weights is not None:
        if importance_weights.shape != loss_mask.shape:
            raise ValueError(
                f"importance_weights {tuple(importance_weights.shape)} must be {tuple(loss_mask.shape)}"
            )
        per_token = per_token * torch.where(mask, importance_weights.detach().to(per_token.dtype), zeros)
    loss = aggregate(per_token, mask, aggregation, denominator)

    with torch.no_grad():
        ratio_d = ratio.detach()
        old = torch.where(mask, old_logprobs.detach().to(logprobs.dtype), zeros)
        drift = (current.detach() - old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        metrics = {
            "clip_frac_low": masked_mean(((ratio_d < 1.0 - eps_low) & (adv < 0)).float(), mask),
            "clip_frac_high": masked_mean(((ratio_d > 1.0 + eps_high) & (adv > 0)).float(), mask),
            "dual_clip_frac": masked_mean(((ratio_d > (dual_clip or math.inf)) & (adv < 0)).float(), mask),
            "ratio_mean": masked_mean(ratio_d, mask),
            "ratio_max": torch.where(mask, ratio_d, zeros).max() if mask.any() else zeros.sum(),
            # k3 = (r - 1) - log r with r = pi_theta / pi_old, an unbiased, non-negative estimate of KL(old || new)
            "approx_kl": masked_mean(torch.expm1(drift) - drift, mask),
            "num_tokens": mask.sum().to(torch.float32),
        }
    return loss, metrics


def truncated_importance_weights(
    trainer_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    cap: float = 2.0,
) -> torch.Tensor:
    """Truncated importance sampling (TIS) weights for a sampler/trainer mismatch (e.g. vLLM vs HF numerics).

    The tokens were drawn from the inference engine's distribution ``q`` but the loss assumes ``pi_old``::

        w_t = min(exp(log pi_old(t) - log q(t)), cap)         (Yao et al. 2025, "Your efficient RL framework
                                                               secretly brings you off-policy RL training")

    Computed in log space (``min`` on the log-ratio, then one ``exp``). Masked positions get weight 1.

    Args:
        trainer_logprobs: ``(B, T)`` log pi_old recomputed by the trainer.
        sampler_logprobs: ``(B, T)`` log-probs reported by the generation backend.
        loss_mask: ``(B, T)`` bool/{0,1}.
        cap: upper truncation C > 0.

    Returns:
        ``(B, T)`` detached weights in ``(0, cap]``.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if trainer_logprobs.shape != sampler_logprobs.shape or trainer_logprobs.shape != loss_mask.shape:
        raise ValueError("trainer_logprobs, sampler_logprobs and loss_mask must have the same (B, T) shape")
    mask = loss_mask.bool()
    zeros = torch.zeros_like(trainer_logprobs)
    log_w = torch.where(mask, trainer_logprobs, zeros) - torch.where(
        mask, sampler_logprobs.to(zeros.dtype), zeros
    )
    log_w = log_w.clamp(min=-MAX_LOG_RATIO, max=math.log(cap))
    return torch.exp(log_w).detach()
