"""Test doubles and tiny fixtures shared by the rollout, trainer and REX-RAG tests (no weights, no network).

- :class:`ScriptedBackend`: a :class:`~rlcore.generation.types.GenerationBackend` whose "policy" is a Python
  function of the context. It applies stop ids, stop strings and ``max_new_tokens`` token by token exactly like
  the real backends, returns known log-probs, and records every call so tests can assert one batched call per
  turn.
- :func:`build_tiny_tokenizer` / :func:`build_tiny_qwen2`: a byte-level BPE tokenizer trained in code on a
  Search-R1-style corpus and a random ``Qwen2ForCausalLM`` on it (a few hundred thousand parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rlcore.generation.sampling import StopStringMatcher
from rlcore.generation.types import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams
from rlcore.models import train_bpe_tokenizer

__all__ = [
    "ScriptedBackend",
    "ScriptedCall",
    "scripted_logprob",
    "TINY_CORPUS",
    "build_tiny_tokenizer",
    "build_tiny_qwen2",
]

Responder = Callable[[list[int], str], "str | list[int]"]


def scripted_logprob(position: int, token_id: int) -> float:
    """The fake log-prob ScriptedBackend reports for ``token_id`` at ``position`` of a continuation.

    Distinct per (position, token) so a test can tell the engine copied the right value to the right slot:
    -(position + 1) / 100 - token_id / 1e6.
    """
    return -(position + 1) / 100.0 - token_id / 1e6


@dataclasses.dataclass
class ScriptedCall:
    """One ``generate`` call: the contexts it got and the sampling params."""

    prompts: list[list[int]]
    params: SamplingParams


class ScriptedBackend:
    """Continues each context with ``respond(context_ids, context_text)``.

    ``respond`` returns the full intended continuation, as text (encoded without special tokens) or as token
    ids (used verbatim, so tests can emit non-canonical tokenizations). The continuation is then cut exactly
    as a sampler would: after the first stop id (EOS included unless ``ignore_eos``), after the token whose
    decoding first contains a stop string, or at ``max_new_tokens``.
    """

    def __init__(
        self,
        tokenizer,
        respond: Responder,
        eos_token_ids: set[int] | None = None,
        skip_special_tokens: bool = True,
    ):
        self.tokenizer = tokenizer
        self.respond = respond
        self.skip_special_tokens = skip_special_tokens
        if eos_token_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_token_ids = {eos} if isinstance(eos, int) else set()
        self.eos_token_ids = set(eos_token_ids)
        self.calls: list[ScriptedCall] = []
        self.weight_updates = 0

    def update_weights(self, model=None) -> None:
        self.weight_updates += 1

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        params.validate()
        self.calls.append(ScriptedCall([list(p) for p in prompts], params))
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids)
        results = []
        for context in prompts:
            intended = self.respond(list(context), self._decode(list(context)))
            if isinstance(intended, str):
                intended = self.tokenizer.encode(intended, add_special_tokens=False)
            matcher = StopStringMatcher(params.stop)
            kept: list[int] = []
            reason, stop_reason = FINISH_LENGTH, None
            for token in intended:
                kept.append(token)
                if token in stop_ids:
                    reason, stop_reason = FINISH_STOP, token
                    break
                if params.stop and (hit := matcher.find(self._decode(kept))) is not None:
                    reason, stop_reason = FINISH_STOP, hit
                    break
                if len(kept) >= params.max_new_tokens:
                    break
            logprobs = [scripted_logprob(i, t) for i, t in enumerate(kept)]
            results.append(Generation(kept, logprobs, reason, self._decode(kept), stop_reason))
        return results


# Enough of the tag protocol for BPE to learn tokens for the tags and the observation wrapper.
TINY_CORPUS = [
    "<think> I should look this up. </think>\n<search> capital of France </search>",
    "\n\n<information>Doc 1(Title: France) Paris is the capital of France.\nDoc 2(Title: Paris) A city.</information>\n\n",
    "<think> The documents say Paris. </think>\n<answer> Paris </answer>",
    "Answer the question. Reason inside <think> and </think>, search with <search> query </search>, "
    "read results inside <information> and </information>, and answer inside <answer> and </answer>.",
    "Question: who wrote the novel? Question: which river flows through the city? The answer is B.",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on :data:`TINY_CORPUS` (ChatML specials, EOS ``<|im_end|>``)."""

    return train_bpe_tokenizer(TINY_CORPUS * 20, vocab_size=vocab_size)


def build_tiny_qwen2(tokenizer, seed: int = 0, hidden_size: int = 64, num_layers: int = 2):
    """A random ``Qwen2ForCausalLM`` sized to ``tokenizer``, fp32, eval mode.

    Untied embeddings and a wide init (std 0.1) so that outputs depend on the context; with the default tiny
    init and tied embeddings a random model just repeats its last token.
    """
    # torch is heavy (~1 s to import) and only this path needs it
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=0.1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.eval()
