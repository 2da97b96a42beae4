"""Policy correction: per-token behaviour log-probabilities of the mixture of the policy and the probe policy.

A batch holds N originals sampled from pi_old and K kept probes sampled from the probe policy mu. Treating the batch
as drawn from the mixture (balance-heuristic multiple importance sampling), every token's PPO ratio uses

    b_t = (1 - alpha) * pi_old(t) + alpha * mu(t),       alpha = K / (N + K),       ratio_t = pi_theta(t) / b_t

instead of pi_old(t). The probe policy mu of one response (tokens indexed t = 0..T-1, the inserted prompt occupying
[j, j + L)) is

    original trajectory:          mu(t) = 0                                   -> b = (1 - alpha) pi_old
    probe prefix      t < j:      mu(t) = pi_old(t) * z^(-1/j)                (prefix conditioned on failure, the
                                                                               1/z spread evenly over j tokens)
    inserted prompt   j <= t < j+L: mu(t) = Trie(x_t | x_j..x_{t-1})          (uniform pool draw; equals 1 on the
                                                                               first token for our pools, which all
                                                                               start with "<think> ")
    continuation      t >= j + L: mu(t) = pi_old(t)

where z is the error rate of the step's original rollouts. Everything is computed in log space with
``logaddexp`` (never ``log(exp(a) + exp(b))``), so log-probs of -200 stay finite (official bug 6).

Variants (``variant``):
- ``none``: no correction, the trainer keeps pi_old in the ratio (:func:`behaviour_logprobs` returns None).
- ``paper`` (default): the per-token mixture above, the official code's behaviour.
- ``coarse``: all of the prompt's probability under the pool (count/N) on its first token, mu = 1 on the rest.
- ``sequence``: one sequence-level balance-heuristic weight per trajectory,
  ``w_i = min(c, pi_old(y_i) / ((1 - alpha) pi_old(y_i) + alpha mu(y_i)))`` over its loss-mask tokens with
  ``mu(y) = pi_old(y) / z * P_pool(prompt) / pi_old(prompt)``, applied to every token as ``b_t = pi_old(t) / w_i``
  (the PPO ratio becomes ``w_i * pi_theta / pi_old``), truncated at ``c = sequence_weight_cap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

VARIANTS = ("none", "paper", "coarse", "sequence")
PREFIX_COUNTS = ("response_tokens", "model_tokens")


@dataclass
class ProbeLayout:
    """Where the exploratory prompt sits in one response (an original trajectory has ``is_probe=False``)."""

    is_probe: bool  # True for a probe (non-original) trajectory
    insert_start: int = -1  # j: index in the response of the first inserted token
    # log Trie(x_t | ...) per inserted token, length L
    pool_logprobs: list[float] = field(default_factory=list)
    prefix_model_tokens: int = 0  # loss-mask tokens before j (used with prefix_count="model_tokens")

    @property
    def insert_length(self) -> int:
        return len(self.pool_logprobs)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha (probe fraction) must lie in [0, 1), got {alpha}")


def effective_error_rate(error_rate: float, min_error_rate: float = 1e-6) -> float:
    """z clamped to [min_error_rate, 1]: z = 0 (every original correct) would divide by zero."""
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must lie in [0, 1], got {error_rate}")
    return max(error_rate, min_error_rate)


def probe_log_mu(
    old_logprobs: torch.Tensor,
    layouts: Sequence[ProbeLayout],
    error_rate: float,
    variant: str = "paper",
    prefix_count: str = "response_tokens",
    min_error_rate: float = 1e-6,
) -> torch.Tensor:
    """log mu(t) for every response position.

    Args:
        old_logprobs: (B, T) log pi_old of the response tokens.
        layouts: B entries describing each row.
        error_rate: z, fraction of the step's originals that are wrong.
        variant: "paper" (per-token trie) or "coarse" (prompt mass on its first token).
        prefix_count: "response_tokens" spreads 1/z over all j positions before the prompt (official, counts
            retrieved text too); "model_tokens" spreads it over the loss-mask tokens only.
    Returns:
        (B, T) float tensor, -inf on original rows; positions past each response are filled like continuation.
    """
    if variant not in ("paper", "coarse"):
        raise ValueError(f"probe_log_mu variant must be 'paper' or 'coarse', got {variant!r}")
    if prefix_count not in PREFIX_COUNTS:
        raise ValueError(f"prefix_count must be one of {PREFIX_COUNTS}, got {prefix_count!r}")
    if len(layouts) != old_logprobs.shape[0]:
        raise ValueError(f"{len(layouts)} layouts for {old_logprobs.shape[0]} rows")
    log_z = math.log(effective_error_rate(error_rate, min_error_rate))
    log_mu = torch.full_like(old_logprobs, -math.inf)
    width = old_logprobs.shape[1]
    for row, layout in enumerate(layouts):
        if not layout.is_probe:
            continue
        start, length = layout.insert_start, layout.insert_length
        if start < 0 or length == 0 or start + length > width:
            raise ValueError(
                f"row {row}: probe layout start={start} length={length} does not fit width {width}"
            )
        log_mu[row] = old_logprobs[row]  # continuation (and anything past it): mu = pi_old
        if start > 0:
            spread = start if prefix_count == "response_tokens" else max(layout.prefix_model_tokens, 1)
            log_mu[row, :start] = old_logprobs[row, :start] - log_z / spread
        pool = torch.tensor(layout.pool_logprobs, dtype=old_logprobs.dtype)
        if variant == "paper":
            log_mu[row, start : start + length] = pool
        else:
            log_mu[row, start] = pool.sum()
            log_mu[row, start + 1 : start + length] = 0.0
    return log_mu


def mixture_logprobs(old_logprobs: torch.Tensor, log_mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """log b = log((1 - alpha) exp(old) + alpha exp(log_mu)) via logaddexp; alpha = 0 returns old unchanged."""
    _check_alpha(alpha)
    if alpha == 0.0:
        return old_logprobs.clone()
    return torch.logaddexp(old_logprobs + math.log1p(-alpha), log_mu + math.log(alpha))


def sequence_log_weights(
    old_logprobs: torch.Tensor,
    loss_mask: torch.Tensor,
    layouts: Sequence[ProbeLayout],
    alpha: float,
    error_rate: float,
    weight_cap: float = 1.0,
    min_error_rate: float = 1e-6,
) -> torch.Tensor:
    """(B,) log of the truncated sequence-level mixture weight w_i (see module docstring), computed in float64."""
    _check_alpha(alpha)
    old = old_logprobs.double() * loss_mask.double()
    log_pi = old.sum(dim=1)
    if alpha == 0.0:
        log_w = torch.zeros_like(log_pi)
    else:
        log_z = math.log(effective_error_rate(error_rate, min_error_rate))
        log_mu = torch.full_like(log_pi, -math.inf)
        for row, layout in enumerate(layouts):
            if layout.is_probe:
                start, length = layout.insert_start, layout.insert_length
                log_pi_prompt = old[row, start : start + length].sum()
                log_mu[row] = log_pi[row] - log_z + sum(layout.pool_logprobs) - log_pi_prompt
        log_b = torch.logaddexp(log_pi + math.log1p(-alpha), log_mu + math.log(alpha))
        log_w = log_pi - log_b
    return torch.clamp(log_w, max=math.log(weight_cap)).to(old_logprobs.dtype)


def behaviour_logprobs(
    old_logprobs: torch.Tensor,
    valid_mask: torch.Tensor,
    layouts: Sequence[ProbeLayout],
    alpha: float,
    error_rate: float,
    variant: str = "paper",
    prefix_count: str = "response_tokens",
    sequence_weight_cap: float = 1.0,
    min_error_rate: float = 1e-6,
) -> torch.Tensor | None:
    """(B, T) behaviour log-probs log b_t to use in place of log pi_old in the PPO ratio; None for ``variant="none"``.

    ``valid_mask`` (B, T) marks real response tokens; elsewhere the result equals ``old_logprobs`` so padding can
    never produce NaN. For ``sequence`` the mask also selects the tokens whose log-probs enter pi_old(y), so pass the
    loss mask (model + inserted tokens).
    """
    if variant not in VARIANTS:
        raise ValueError(f"correction variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "none":
        return None
    valid = valid_mask.bool()
    if variant == "sequence":
        log_w = sequence_log_weights(
            old_logprobs, valid_mask, layouts, alpha, error_rate, sequence_weight_cap, min_error_rate
        )
        behaviour = old_logprobs - log_w[:, None]
    else:
        log_mu = probe_log_mu(old_logprobs, layouts, error_rate, variant, prefix_count, min_error_rate)
        behaviour = mixture_logprobs(old_logprobs, log_mu, alpha)
    return torch.where(valid, behaviour, old_logprobs)


def importance_diagnostics(
    old_logprobs: torch.Tensor,
    behaviour: torch.Tensor,
    loss_mask: torch.Tensor,
    is_probe: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    logprobs: torch.Tensor | None = None,
) -> dict[str, float]:
    """Token-level diagnostics of w_t = pi(t) / b_t over loss-mask tokens.

    ``pi`` is ``logprobs`` when given (the current policy) else pi_old (the weights at the start of the update).
    Returns weight mean/max, the normalised effective sample size ESS = (sum w)^2 / (n * sum w^2) in (0, 1],
    and the fraction of tokens outside the PPO trust region [1 - eps_low, 1 + eps_high] for originals and probes.
    """
    current = old_logprobs if logprobs is None else logprobs
    mask = loss_mask.bool()
    log_w = (current - behaviour).double()
    probe_rows = is_probe.bool()[:, None].expand_as(mask)
    out: dict[str, float] = {}
    weights = torch.exp(log_w[mask])
    if weights.numel():
        out["is_weight_mean"] = weights.mean().item()
        out["is_weight_max"] = weights.max().item()
        out["is_ess"] = (weights.sum() ** 2 / (weights.numel() * (weights**2).sum())).item()
    for name, select in (("orig", mask & ~probe_rows), ("probe", mask & probe_rows)):
        w = torch.exp(log_w[select])
        if w.numel():
            out[f"is_weight_mean_{name}"] = w.mean().item()
            out[f"clip_frac_{name}"] = ((w < 1 - eps_low) | (w > 1 + eps_high)).double().mean().item()
    return out


PROBE_TOKEN_CLASSES = ("prefix", "inserted", "continuation")


def probe_token_classes(layouts: Sequence[ProbeLayout], width: int) -> torch.Tensor:
    """(B, T) int64 class of every response position of a probe row: 0 prefix (t < j, copied from the original),
    1 inserted prompt (j <= t < j + L), 2 continuation (t >= j + L); -1 on original rows."""
    classes = torch.full((len(layouts), width), -1, dtype=torch.long)
    for row, layout in enumerate(layouts):
        if layout.is_probe:
            start, end = layout.insert_start, layout.insert_start + layout.insert_length
            classes[row, :start] = 0
            classes[row, start:end] = 1
            classes[row, end:] = 2
    return classes


def clip_by_token_class(
    old_logprobs: torch.Tensor,
    behaviour: torch.Tensor,
    loss_mask: torch.Tensor,
    layouts: Sequence[ProbeLayout],
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    advantage_sign: torch.Tensor | None = None,
    logprobs: torch.Tensor | None = None,
) -> dict[str, float]:
    """Which probe tokens the PPO clip acts on, split by token class (prefix / inserted / continuation).

    w_t = pi(t) / b_t with ``pi = logprobs`` when given, else pi_old: at the start of the update, which is the
    ratio the loss sees when a step makes one optimizer update (one PPO epoch, one mini-batch). Over the
    loss-mask tokens of probe rows, per class ``c``:

    - ``probe_tokens_c``: number of tokens; ``clip_count_probe_c``: tokens outside [1 - eps_low, 1 + eps_high];
      ``clip_low_count_probe_c``: those below 1 - eps_low; ``clip_frac_probe_c`` = clipped / tokens (absent when
      the class has no tokens, e.g. ``inserted`` with ``train_inserted=false``).
    - with ``advantage_sign`` ((B,) sign of each row's advantage): ``clip_nograd_frac_probe_c``, the share of
      the class's tokens whose gradient the clip removes (w < 1 - eps_low with A < 0, or w > 1 + eps_high with
      A > 0); the other clipped tokens keep the unclipped gradient of min(w A, clip(w) A).
    """
    if old_logprobs.shape != behaviour.shape or old_logprobs.shape != loss_mask.shape:
        raise ValueError(
            f"old_logprobs {tuple(old_logprobs.shape)}, behaviour {tuple(behaviour.shape)} and loss_mask "
            f"{tuple(loss_mask.shape)} must have the same (B, T) shape"
        )
    current = old_logprobs if logprobs is None else logprobs
    weights = torch.exp((current - behaviour).double())
    low, high = weights < 1 - eps_low, weights > 1 + eps_high
    classes = probe_token_classes(layouts, old_logprobs.shape[1])
    mask = loss_mask.bool()
    nograd = None
    if advantage_sign is not None:
        sign = advantage_sign.reshape(-1, 1).expand_as(mask)
        nograd = (low & (sign < 0)) | (high & (sign > 0))
    out: dict[str, float] = {}
    for code, name in enumerate(PROBE_TOKEN_CLASSES):
        select = mask & (classes == code)
        tokens = int(select.sum())
        clipped = int(((low | high) & select).sum())
        out[f"probe_tokens_{name}"] = float(tokens)
        out[f"clip_count_probe_{name}"] = float(clipped)
        out[f"clip_low_count_probe_{name}"] = float((low & select).sum())
        if tokens:
            out[f"clip_frac_probe_{name}"] = clipped / tokens
            if nograd is not None:
                out[f"clip_nograd_frac_probe_{name}"] = float((nograd & select).sum()) / tokens
    return out
