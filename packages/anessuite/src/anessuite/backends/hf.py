"""In-process Hugging Face backend: chat template -> token ids -> batched greedy decoding over the KV cache,
plus log-likelihood scoring of option letters (one forward pass per batch of questions).

Evaluation prompts share long prefixes (system prompt + instructions: about 70% of an AnesBench prompt), so a
batch's common prefix is run through the model once and its KV cache is copied to every row; only the
per-question suffixes are prefilled per row. On CPU, prefill is compute-bound and was most of the batched
time, so this is what lets batching pay off (see ``anessuite.bench.eval_speed``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from anessuite.backends import Completion, Messages
from anessuite.cache import model_fingerprint

__all__ = ["HFChatBackend", "encode_chat", "common_prefix_length", "plan_batches"]

logger = logging.getLogger(__name__)

# A shared prefix shorter than this is prefilled with the rest of the prompt (a separate forward pass and a
# cache copy cost more than a few tokens of prefill).
MIN_SHARED_PREFIX = 8


def plan_batches(prompts: Sequence[Sequence[int]], batch_size: int, key_tokens: int = 32) -> list[list[int]]:
    """Prompt indices cut into batches that share long prefixes and have similar lengths.

    Prompts are grouped by their first ``key_tokens`` tokens (one group per template: system prompt and
    instructions), each group sorted by length and cut into full batches; the groups' remainders are pooled,
    sorted the same way, and cut into batches too, so every batch but the last is full.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(tuple(prompt[:key_tokens]), []).append(index)
    batches, leftovers = [], []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda i: (len(prompts[i]), i))
        full = len(members) - len(members) % batch_size
        batches += [members[start : start + batch_size] for start in range(0, full, batch_size)]
        leftovers += members[full:]
    leftovers.sort(key=lambda i: (tuple(prompts[i][:key_tokens]), len(prompts[i]), i))
    batches += [leftovers[start : start + batch_size] for start in range(0, len(leftovers), batch_size)]
    return batches


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every prompt starts with."""
    first, length = prompts[0], min(len(prompt) for prompt in prompts)
    for prompt in prompts[1:]:
        position = 0
        while position < length and prompt[position] == first[position]:
            position += 1
        length = position
    return length


def encode_chat(
    tokenizer: Any,
    messages: Messages,
    assistant_prefix: str = "",
    template_kwargs: dict[str, Any] | None = None,
) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template with the assistant turn opened,
    followed by ``assistant_prefix``. Without a chat template: the contents joined by blank lines.
    ``template_kwargs`` reach the template (e.g. ``enable_thinking=False`` for Qwen3)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **(template_kwargs or {})
        )
    else:
        text = "\n\n".join(message["content"] for message in messages) + "\n\n"
    return tokenizer.encode(text + assistant_prefix, add_special_tokens=False)


def _torch_dtype(name: str) -> torch.dtype | None:
    if name == "auto":
        return None
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError as err:
        raise ValueError(f"backend.dtype must be auto, float32, bfloat16 or float16, got {name!r}") from err


class HFChatBackend:
    """Batched greedy chat completions with a transformers model (see ``rlcore.generation.HFBackend``).

    Conversations are grouped by template and length and cut into batches of ``batch_size``; each batch
    prefills its shared prefix once (``share_prefix``) and each finished batch is yielded at once so the
    caller can cache it.
    """

    name = "hf"

    def __init__(
        self,
        model: str | Path,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str | None = None,
        model_obj: Any = None,
        tokenizer: Any = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        share_prefix: bool = True,
    ):
        from rlcore.generation import HFBackend
        from rlcore.models import load_causal_lm, load_tokenizer, resolve_model_path

        self.model_spec = str(model)
        self.model_dir = resolve_model_path(model) if model_obj is None else None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, padding_side="left")
        self.model = (
            model_obj
            if model_obj is not None
            else load_causal_lm(model, dtype=_torch_dtype(dtype), device=device)
        )
        self.model.eval()
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.share_prefix = share_prefix  # prefill a batch's common prompt prefix once (same greedy answers)
        self.generator = HFBackend(self.model, self.tokenizer, batch_size=batch_size)

    def fingerprint(self) -> str:
        if self.model_dir is None:
            raise ValueError("an in-memory model has no fingerprint; save it and pass its folder")
        return model_fingerprint(self.model_dir)

    def complete(
        self, conversations: Sequence[Messages], max_new_tokens: int
    ) -> Iterator[tuple[int, Completion]]:
        """Greedy completions, yielded batch by batch as ``(index, Completion)``.

        Batches hold ``batch_size`` prompts of one template where possible (see :func:`plan_batches`).
        """
        from rlcore.generation.hf_backend import validate_prompts

        prompts = [
            encode_chat(self.tokenizer, m, template_kwargs=self.chat_template_kwargs) for m in conversations
        ]
        validate_prompts(prompts, getattr(self.model.config, "vocab_size", None))
        stop_ids = self.generator.eos_token_ids()
        for chunk in plan_batches(prompts, self.batch_size):
            outputs = self._greedy([prompts[i] for i in chunk], max_new_tokens, stop_ids)
            for index, (token_ids, finish_reason) in zip(chunk, outputs):
                yield (
                    index,
                    Completion(
                        text=self.generator.decode(token_ids),
                        num_tokens=len(token_ids),
                        finish_reason=finish_reason,
                    ),
                )

    @torch.inference_mode()
    def _greedy(
        self, prompts: list[list[int]], max_new_tokens: int, stop_ids: set[int]
    ) -> list[tuple[list[int], str]]:
        """Greedy decoding of one batch: ``(token_ids, "stop" | "length")`` per prompt.

        With ``share_prefix``, the batch's common prefix (``shared`` tokens) is run once and its cache repeated
        over the rows; each row's suffix is then padded on the left *of the suffix*, so a row reads
        ``prefix | pad | suffix`` with the pads masked out and position ids following the mask. Without a
        shared prefix this is plain left padding. Finished rows leave the batch and the cache.
        """
        device = next(self.model.parameters()).device
        batch = len(prompts)
        shared = common_prefix_length(prompts) if self.share_prefix and batch > 1 else 0
        shared = min(shared, min(len(prompt) for prompt in prompts) - 1)  # every row keeps a suffix token
        cache = None
        if shared >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=device)
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(batch)
        else:
            shared = 0
        suffixes = [prompt[shared:] for prompt in prompts]
        width = max(len(suffix) for suffix in suffixes)
        pad = next(
            (t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if t is not None), 0
        )
        input_ids = torch.full((batch, width), pad, dtype=torch.long, device=device)  # (batch, width)
        attention_mask = torch.zeros((batch, shared + width), dtype=torch.long, device=device)
        attention_mask[:, :shared] = 1
        for row, suffix in enumerate(suffixes):
            input_ids[row, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long, device=device)
            attention_mask[row, shared + width - len(suffix) :] = 1
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (batch, shared + width)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions[:, shared:],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :]  # logits: (alive, vocab)
        next_position = positions[:, -1] + 1  # (alive,)
        alive = list(range(batch))  # alive[j] = batch row of the j-th row still decoding
        token_ids: list[list[int]] = [[] for _ in range(batch)]
        finish = ["length"] * batch
        for _step in range(max_new_tokens):
            tokens = torch.argmax(logits, dim=-1)  # (alive,)
            keep: list[int] = []
            for j, token in enumerate(tokens.tolist()):
                row = alive[j]
                token_ids[row].append(token)
                if token in stop_ids:
                    finish[row] = "stop"
                elif len(token_ids[row]) < max_new_tokens:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(index)
                attention_mask, next_position, tokens = (
                    attention_mask[index],
                    next_position[index],
                    tokens[index],
                )
                alive = [alive[j] for j in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
            out = self.model(
                input_ids=tokens.unsqueeze(-1),
                attention_mask=attention_mask,
                position_ids=next_position.unsqueeze(-1),
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            next_position = next_position + 1
        return [(token_ids[row], finish[row]) for row in range(batch)]

    def _continuations(self, prefix: str, letters: Sequence[str]) -> list[list[int]]:
        """Token ids each letter adds after the answer prefix (a space after an ASCII prefix like "Answer:")."""
        separator = " " if prefix and prefix[-1].isascii() and not prefix[-1].isspace() else ""
        out = []
        for letter in letters:
            full = self.tokenizer.encode(prefix + separator + letter, add_special_tokens=False)
            prefix_only = self.tokenizer.encode(prefix, add_special_tokens=False)
            if full[: len(prefix_only)] != prefix_only:
                raise ValueError(f"tokenizer merges the answer prefix {prefix!r} with the letter {letter!r}")
            out.append(full[len(prefix_only) :])
        return out

    @torch.inference_mode()
    def _sequence_logprobs(self, sequences: list[list[int]], continuation_lengths: list[int]) -> list[float]:
        """Sum of log p(continuation token | everything before) for each sequence; the continuation is the
        last ``continuation_lengths[i]`` tokens. Left-padded batch, position ids follow the mask."""
        device = next(self.model.parameters()).device
        width = max(len(seq) for seq in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, device=device)
            mask[row, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # (batch, width-1, vocab): predicts token t+1
        targets = input_ids[:, 1:]
        token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (batch, width-1)
        return [
            float(token_logprobs[row, width - 1 - n :].sum()) for row, n in enumerate(continuation_lengths)
        ]

    @torch.inference_mode()
    def _next_token_logprobs(
        self, sequences: list[list[int]], token_ids: list[list[int]]
    ) -> list[list[float]]:
        """log p(next token = t | sequence) for each t in ``token_ids[i]``: one forward of the prompts only."""
        device = next(self.model.parameters()).device
        width = max(len(seq) for seq in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, device=device)
            mask[row, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
        ).logits
        logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (batch, vocab)
        return [[float(logprobs[row, t]) for t in ids] for row, ids in enumerate(token_ids)]

    def score_letters(
        self, conversations: Sequence[Messages], prefixes: Sequence[str], letters: Sequence[Sequence[str]]
    ) -> Iterator[tuple[int, dict[str, float]]]:
        """log p(letter | prompt, answer prefix) for every option letter of every conversation.

        When every letter is one token after the prefix (the usual case), one forward pass of the prompt scores
        all letters at once: log_softmax(logits at the last position)[letter ids]. Otherwise each
        (question, letter) pair is scored as the sum of its continuation's token log-probs. Batches hold
        ``batch_size`` sequences. Yields ``(index, {letter: log-prob})`` per conversation.
        """
        prompts, continuations = [], []
        for messages, prefix, option_letters in zip(conversations, prefixes, letters):
            prompts.append(encode_chat(self.tokenizer, messages, prefix, self.chat_template_kwargs))
            continuations.append(self._continuations(prefix, option_letters))
        single = [index for index, conts in enumerate(continuations) if all(len(c) == 1 for c in conts)]
        single.sort(key=lambda index: len(prompts[index]))
        for start in range(0, len(single), self.batch_size):
            chunk = single[start : start + self.batch_size]
            values = self._next_token_logprobs(
                [prompts[i] for i in chunk], [[c[0] for c in continuations[i]] for i in chunk]
            )
            for index, row in zip(chunk, values):
                yield index, dict(zip(letters[index], row))
        single_set = set(single)
        pairs = [
            (index, letter, prompts[index] + cont, len(cont))
            for index in range(len(prompts))
            if index not in single_set
            for letter, cont in zip(letters[index], continuations[index])
        ]
        pairs.sort(key=lambda pair: (len(pair[2]), pair[0]))
        scores: dict[int, dict[str, float]] = {}
        remaining = {index: len(letters[index]) for index in range(len(prompts)) if index not in single_set}
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            values = self._sequence_logprobs([seq for _, _, seq, _ in chunk], [n for *_, n in chunk])
            for (index, letter, _, _), value in zip(chunk, values):
                scores.setdefault(index, {})[letter] = value
                remaining[index] -= 1
                if remaining[index] == 0:
                    yield index, scores.pop(index)
