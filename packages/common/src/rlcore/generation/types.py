"""The small interface every generation backend implements: token ids in, sampled ids and their log-probs out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["SamplingParams", "Generation", "GenerationBackend", "FINISH_STOP", "FINISH_LENGTH"]

# finish_reason values (the same two words vLLM uses).
FINISH_STOP = "stop"  # an EOS / stop token id was sampled, or a stop string appeared in the text
FINISH_LENGTH = "length"  # max_new_tokens reached


@dataclass
class SamplingParams:
    """How to sample one batch of continuations.

    The sampling distribution at each step is ``softmax(top_p(top_k(logits / temperature)))``; the log-probs a
    backend returns are of the sampled token under exactly that distribution. ``greedy`` takes the arg-max and
    reports the log-prob under the unmodified model distribution (temperature 1, no filtering), since the
    greedy distribution itself is a point mass.
    """

    max_new_tokens: int = 256  # most tokens generated per prompt in this call
    temperature: float = 1.0  # logits are divided by this; 0 means greedy
    top_p: float = 1.0  # nucleus sampling: smallest set of tokens whose mass reaches top_p (1 = off)
    top_k: int = -1  # keep only the k most likely tokens (-1 or 0 = off)
    stop: list[str] = field(default_factory=list)  # stop once any of these strings appears in the new text
    stop_token_ids: list[int] = field(default_factory=list)  # extra stop ids, on top of the model's EOS ids
    seed: int | None = None  # None: the global torch RNG (what checkpoints capture); else a private generator
    greedy: bool = False  # arg-max decoding (evaluation)
    ignore_eos: bool = False  # keep going after EOS (benchmarks with a fixed length)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field on an impossible value."""
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(
                f"SamplingParams.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}"
            )
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(
                f"SamplingParams.top_k must be -1, 0 (off) or a positive int, got {self.top_k!r}"
            )
        if isinstance(self.stop, str):
            raise ValueError("SamplingParams.stop must be a list of strings, got a single string")
        if any(not isinstance(s, str) or s == "" for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise ValueError(
                f"SamplingParams.stop_token_ids must be non-negative ints, got {self.stop_token_ids!r}"
            )

    @property
    def is_greedy(self) -> bool:
        """Greedy when asked for, or when the temperature is 0 (the vLLM convention)."""
        return self.greedy or self.temperature == 0.0

    def replace(self, **changes) -> SamplingParams:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class Generation:
    """One continuation.

    ``token_ids`` are exactly the sampled ids (stop tokens included, nothing re-tokenized); ``logprobs[i]`` is
    the log-prob of ``token_ids[i]`` under the sampling distribution; ``text`` is their decoding.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # FINISH_STOP or FINISH_LENGTH
    text: str
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it, None otherwise

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"Generation: {len(self.token_ids)} token ids but {len(self.logprobs)} logprobs")


@runtime_checkable
class GenerationBackend(Protocol):
    """Anything that continues a batch of token-id prompts.

    ``generate(prompts, params)`` returns one :class:`Generation` per prompt, in the same order.
    """

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]: ...
