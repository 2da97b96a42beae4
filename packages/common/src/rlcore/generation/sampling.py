"""Pure pieces of the sampling loop: the sampling distribution, the draw, and stop-string detection."""

from __future__ import annotations

import torch

__all__ = ["sampling_logprobs", "draw_tokens", "StopStringMatcher"]


def sampling_logprobs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = -1, top_p: float = 1.0
) -> torch.Tensor:
    """Log-probs of the distribution tokens are drawn from, in float32.

    logits: (batch, vocab). Returns (batch, vocab) with ``-inf`` on filtered tokens and

        log p = log_softmax(mask_top_p(mask_top_k(logits / temperature)))

    Order as in Hugging Face and vLLM: temperature, then top-k (ties with the k-th value are kept), then top-p
    on the top-k-renormalised distribution. Top-p keeps token j (sorted by probability, descending) iff the
    mass of the tokens ranked before it is < top_p, so the most likely token is always kept.
    ``temperature == 0`` is treated as 1 here (greedy callers take the arg-max themselves).
    """
    scores = logits.float()
    if temperature > 0 and temperature != 1.0:
        scores = scores / temperature
    vocab = scores.shape[-1]
    if 0 < top_k < vocab:
        kth_value = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth_value, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_scores, dim=-1)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        remove_sorted = mass_before >= top_p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def draw_tokens(logprobs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from ``exp(logprobs)``: (batch, vocab) -> (batch,) long."""
    probs = logprobs.exp()
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


class StopStringMatcher:
    """Finds the first stop string in a growing decoded text, rescanning only the tail.

    ``find(text)`` returns the stop string found in ``text`` (the full decoded continuation so far) or None.
    Only the part that could contain a new match is searched: the text after the previous call, extended
    back by the longest stop string plus a few characters, because decoding a longer token list can rewrite
    the last characters (an incomplete UTF-8 sequence becomes a full character).
    """

    _REWRITE_SLACK = 4

    def __init__(self, stop: list[str]):
        self.stop = list(stop)
        self._longest = max((len(s) for s in self.stop), default=0)
        self._scanned = 0

    def find(self, text: str) -> str | None:
        if not self.stop:
            return None
        start = max(0, self._scanned - self._longest - self._REWRITE_SLACK)
        self._scanned = len(text)
        best: tuple[int, str] | None = None
        for candidate in self.stop:
            position = text.find(candidate, start)
            if position >= 0 and (best is None or position < best[0]):
                best = (position, candidate)
        return None if best is None else best[1]
