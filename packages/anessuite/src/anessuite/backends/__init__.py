"""Evaluation backends: chat conversations in, completions out, yielded as they finish (so they can be cached).

- ``hf``: in-process transformers model, batched through ``rlcore.generation.HFBackend`` (CPU or GPU); also the
  only backend with log-likelihood letter scoring.
- ``vllm``: offline vLLM engine (gpu extra, imported lazily), tensor parallel.
- ``openai``: any OpenAI-compatible server (vLLM, SGLang, ...): concurrency, outage budget, endpoint errors stop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Completion", "ChatBackend", "Messages"]

Messages = list[dict[str, str]]


@dataclass
class Completion:
    """One response. ``reasoning`` holds a separately returned chain of thought (``reasoning_content``).
    ``error`` is set (and ``text`` empty) when a backend reports a request that failed for good; such a
    completion is never cached."""

    text: str
    num_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    reasoning: str | None = None


class ChatBackend(Protocol):
    name: str

    def fingerprint(self) -> str:
        """Identity of the weights behind this backend (see ``anessuite.cache.model_fingerprint``)."""
        ...

    def complete(
        self, conversations: Sequence[Messages], max_new_tokens: int
    ) -> Iterator[tuple[int, Completion]]:
        """Greedy completions; yields ``(index into conversations, completion)`` in any order as they finish."""
        ...
