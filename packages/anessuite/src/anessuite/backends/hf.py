"""In-process Hugging Face backend: chat template -> token ids -> batched greedy decoding over the KV cache,
plus log-likelihood scoring of option letters (one forward pass per batch of questions).

Evaluation prompts share long prefixes (system prompt + instructions: about 70% of an AnesBench prompt), so a
batch's common prefix is run through the model once and its KV cache is copied to every row; only the
per-question suffixes are prefilled per row. On CPU, prefill is compute-bound and was most of the batched
time, so this is what lets batching pay off (see ``anessuite.bench.eval_speed``)."""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from anessuite.backends import Completion, Messages
from anessuite.backends.batch_plan import MIN_SHARED_PREFIX, common_prefix_length, length_runs, plan_batches
from anessuite.backends.gqa_attention import GQA_SDPA, use_gqa_sdpa
from anessuite.backends.kv_cache import DecodingRows, reserve
from anessuite.cache import model_fingerprint
from rlcore.generation import HFBackend
from rlcore.generation.hf_backend import validate_prompts
from rlcore.models import load_causal_lm, load_tokenizer, resolve_model_path

__all__ = [
    "GQA_SDPA",
    "HFChatBackend",
    "encode_chat",
    "common_prefix_length",
    "length_runs",
    "plan_batches",
    "use_gqa_sdpa",
]

logger = logging.getLogger(__name__)


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

    Conversations are grouped by template and length (:func:`plan_batches`) and decoded with continuous
    batching (see :meth:`complete`); each group prefills its shared prefix once (``share_prefix``) and each
    completion is yielded as soon as it finishes, so the caller can cache it.
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
        if use_gqa_sdpa(self.model):
            logger.info("attention: %s (grouped key/value heads passed to SDPA without copies)", GQA_SDPA)
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.share_prefix = share_prefix  # prefill a batch's common prompt prefix once (same greedy answers)
        self.prefill_waste = 0.1  # pad share a group's suffix prefill may compute before it splits into runs
        self.generator = HFBackend(self.model, self.tokenizer, batch_size=batch_size)

    def fingerprint(self) -> str:
        if self.model_dir is None:
            raise ValueError("an in-memory model has no fingerprint; save it and pass its folder")
        return model_fingerprint(self.model_dir)

    def complete(
        self, conversations: Sequence[Messages], max_new_tokens: int
    ) -> Iterator[tuple[int, Completion]]:
        """Greedy completions, yielded as each one finishes, as ``(index, Completion)``.

        Continuous batching: up to ``batch_size`` rows decode together. Prompts are admitted a group at a time
        (one template, similar lengths: :func:`plan_batches`), each group's shared prefix prefilled once;
        whenever at least half the rows (or the whole next group) have finished, the next group is prefilled
        and joins the running batch, its cache left-padded to the running length.
        """
        prompts = [
            encode_chat(self.tokenizer, m, template_kwargs=self.chat_template_kwargs) for m in conversations
        ]
        validate_prompts(prompts, getattr(self.model.config, "vocab_size", None))
        stop_ids = self.generator.eos_token_ids()
        for index, token_ids, finish_reason in self._decode(prompts, max_new_tokens, stop_ids):
            completion = Completion(
                text=self.generator.decode(token_ids), num_tokens=len(token_ids), finish_reason=finish_reason
            )
            yield index, completion

    @torch.inference_mode()
    def _decode(
        self, prompts: list[list[int]], max_new_tokens: int, stop_ids: set[int]
    ) -> Iterator[tuple[int, list[int], str]]:
        """``(prompt index, token_ids, "stop" | "length")`` per prompt, in the order they finish."""
        pending = deque(deque(group) for group in plan_batches(prompts, self.batch_size))
        state: DecodingRows | None = None  # the running batch; its ``logits`` still await token selection
        generated: dict[int, list[int]] = {}
        while pending or state is not None:
            room = self.batch_size - (len(state.rows) if state is not None else 0)
            while (
                pending
                and room >= min(len(pending[0]), max(1, self.batch_size // 2))
                and (state is None or state.joinable())
            ):
                take = min(room, len(pending[0]))
                rows = [pending[0].popleft() for _ in range(take)]
                if not pending[0]:
                    pending.popleft()
                joining = self._prefill([prompts[i] for i in rows], rows, max_new_tokens)
                if state is None:
                    state = joining
                    reserve(state.cache, max_new_tokens)  # decode appends in place, no copy per step
                else:
                    state = state.join(joining, max_new_tokens)
                room -= take
            tokens = torch.argmax(state.logits, dim=-1)  # (rows,)
            keep: list[int] = []
            for j, token in enumerate(tokens.tolist()):
                row = state.rows[j]
                out = generated.setdefault(row, [])
                out.append(token)
                if token in stop_ids:
                    yield row, generated.pop(row), "stop"
                elif len(out) >= max_new_tokens:
                    yield row, generated.pop(row), "length"
                else:
                    keep.append(j)
            if not keep:
                state = None
                continue
            state.select(keep)
            state.mask = torch.cat([state.mask, state.mask.new_ones((len(keep), 1))], dim=1)
            out = self.model(
                input_ids=tokens[keep].unsqueeze(-1),
                attention_mask=state.mask,
                position_ids=state.next_position.unsqueeze(-1),
                past_key_values=state.cache,
                use_cache=True,
            )
            state.cache, state.logits = out.past_key_values, out.logits[:, -1, :]
            state.next_position = state.next_position + 1

    def _prefill(self, prompts: list[list[int]], rows: list[int], room: int = 0) -> DecodingRows:
        """Prefill one group; with ``share_prefix`` its common prefix (``shared`` tokens) runs once and its
        cache is repeated over the rows, each row reading ``prefix | pad | suffix`` with the pads masked out
        and position ids following the mask. Without a shared prefix this is plain left padding. Suffixes of
        very different lengths are prefilled in runs of similar length (:func:`length_runs`, all on the one
        prefix cache) and joined, with room for ``room`` more positions, so few pad tokens are computed."""
        device = next(self.model.parameters()).device
        batch = len(prompts)
        shared = common_prefix_length(prompts) if self.share_prefix and batch > 1 else 0
        shared = min(shared, min(len(prompt) for prompt in prompts) - 1)  # every row keeps a suffix token
        prefix_cache = None
        if shared >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=device)
            prefix_cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
        else:
            shared = 0
        suffixes = [prompt[shared:] for prompt in prompts]
        lengths = [len(suffix) for suffix in suffixes]
        runs = length_runs(lengths, self.prefill_waste) if prefix_cache is not None else [batch]
        state, start = None, 0
        for size in runs:
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache) if size < batch else prefix_cache
                cache.batch_repeat_interleave(size)
            part = self._prefill_suffixes(
                suffixes[start : start + size], rows[start : start + size], shared, cache
            )
            state = part if state is None else state.join(part, room)
            start += size
        return state

    def _prefill_suffixes(
        self, suffixes: list[list[int]], rows: list[int], shared: int, cache: Any
    ) -> DecodingRows:
        """One left-padded forward of ``suffixes`` after ``shared`` cached prefix positions (``cache``)."""
        device = next(self.model.parameters()).device
        batch, width = len(suffixes), max(len(suffix) for suffix in suffixes)
        pad = next(
            (t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if t is not None), 0
        )
        input_ids = torch.full((batch, width), pad, dtype=torch.long, device=device)  # (batch, width)
        mask = torch.zeros((batch, shared + width), dtype=torch.long, device=device)
        mask[:, :shared] = 1
        for row, suffix in enumerate(suffixes):
            input_ids[row, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long, device=device)
            mask[row, shared + width - len(suffix) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, shared + width)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions[:, shared:],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return DecodingRows(list(rows), out.past_key_values, mask, positions[:, -1] + 1, out.logits[:, -1, :])

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

    def _left_padded(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token lists as a left-padded batch on the model's device: ``(input_ids, attention_mask, position_ids)``,
        each (batch, longest); positions count real tokens only, so padding shifts no position."""
        device = next(self.model.parameters()).device
        width = max(len(seq) for seq in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, device=device)
            mask[row, width - len(seq) :] = 1
        return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    @torch.inference_mode()
    def _sequence_logprobs(self, sequences: list[list[int]], continuation_lengths: list[int]) -> list[float]:
        """Sum of log p(continuation token | everything before) for each sequence; the continuation is the
        last ``continuation_lengths[i]`` tokens. Left-padded batch, position ids follow the mask."""
        input_ids, mask, positions = self._left_padded(sequences)
        width = input_ids.shape[1]
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
        input_ids, mask, positions = self._left_padded(sequences)
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
