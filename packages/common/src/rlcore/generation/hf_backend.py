"""Hugging Face transformers backend: our own batched sampling loop over the KV cache, CPU or GPU.

Why not ``model.generate``: we need the log-prob of every sampled token under the exact distribution it was
drawn from (after temperature / top-k / top-p), per-row stop strings, and rows that stop to leave the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from rlcore.generation.sampling import StopStringMatcher, draw_tokens, sampling_logprobs
from rlcore.generation.types import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams

__all__ = ["HFBackend", "validate_prompts"]

logger = logging.getLogger(__name__)


def validate_prompts(prompts: list[list[int]], vocab_size: int | None = None) -> None:
    """Raise ValueError naming the first bad prompt (empty, not ints, or an id outside the vocabulary)."""
    if not isinstance(prompts, list):
        raise ValueError(f"prompts must be a list of token-id lists, got {type(prompts).__name__}")
    for index, ids in enumerate(prompts):
        if not isinstance(ids, list | tuple) or len(ids) == 0:
            raise ValueError(f"prompts[{index}] must be a non-empty list of token ids, got {ids!r:.80}")
        for token in ids:
            if not isinstance(token, int) or token < 0 or (vocab_size is not None and token >= vocab_size):
                raise ValueError(
                    f"prompts[{index}] holds an invalid token id {token!r} (vocab size {vocab_size})"
                )


class HFBackend:
    """Batched sampling with a ``transformers`` causal LM.

    Prompts are grouped into batches of ``batch_size`` (sorted by length so padding stays small), left-padded,
    and decoded step by step with the KV cache; finished rows are dropped from the cache so they stop costing
    compute. Position ids follow the attention mask, so a left-padded row sees the same positions as it would
    alone. The model is put in eval mode during generation and restored afterwards.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        batch_size: int = 64,
        skip_special_tokens: bool = True,
        sort_by_length: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"HFBackend.batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.skip_special_tokens = skip_special_tokens
        self.sort_by_length = sort_by_length

    def update_weights(self, model: torch.nn.Module | None = None) -> None:
        """Generate with ``model`` from now on (the HF backend shares the policy's weights, so this is free)."""
        if model is not None:
            self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def eos_token_ids(self) -> set[int]:
        """EOS ids of the tokenizer and of the model's generation config (Qwen has two)."""
        ids: set[int] = set()
        candidates: list = [getattr(self.tokenizer, "eos_token_id", None)]
        generation_config = getattr(self.model, "generation_config", None)
        if generation_config is not None:
            candidates.append(generation_config.eos_token_id)
        for value in candidates:
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, Iterable):
                ids.update(int(v) for v in value if v is not None)
        return ids

    def _pad_id(self) -> int:
        for value in (
            getattr(self.tokenizer, "pad_token_id", None),
            getattr(self.tokenizer, "eos_token_id", None),
        ):
            if isinstance(value, int):
                return value
        return 0

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=self.skip_special_tokens)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One :class:`Generation` per prompt, in prompt order (see :class:`SamplingParams` for the log-probs)."""
        params.validate()
        vocab_size = getattr(getattr(self.model, "config", None), "vocab_size", None)
        validate_prompts(prompts, vocab_size)
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids())
        order = list(range(len(prompts)))
        if self.sort_by_length:
            order.sort(key=lambda index: len(prompts[index]))
        generator = None
        if params.seed is not None and not params.is_greedy:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        results: list[Generation | None] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    outputs = self._generate_batch(
                        [list(prompts[i]) for i in chunk], params, stop_ids, generator
                    )
                    for index, output in zip(chunk, outputs):
                        results[index] = output
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_batch(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        stop_ids: set[int],
        generator: torch.Generator | None,
    ) -> list[Generation]:
        device = self.device
        batch = len(prompts)
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((batch, width), self._pad_id(), dtype=torch.long, device=device)
        attention_mask = torch.zeros((batch, width), dtype=torch.long, device=device)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long, device=device)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        next_position = position_ids[:, -1] + 1  # (alive,)
        logits = out.logits[:, -1, :]  # (alive, vocab)

        alive = list(range(batch))  # alive[j] = batch row of the j-th row still decoding
        token_ids: list[list[int]] = [[] for _ in range(batch)]
        logprobs: list[list[float]] = [[] for _ in range(batch)]
        finish: list[tuple[str, str | int | None] | None] = [None] * batch
        matchers = [StopStringMatcher(params.stop) for _ in range(batch)]
        for _step in range(params.max_new_tokens):
            if params.is_greedy:
                step_logprobs = torch.log_softmax(logits.float(), dim=-1)
                tokens = torch.argmax(logits, dim=-1)
            else:
                step_logprobs = sampling_logprobs(logits, params.temperature, params.top_k, params.top_p)
                tokens = draw_tokens(step_logprobs, generator)
            chosen = step_logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            keep: list[int] = []
            for j, (token, logprob) in enumerate(zip(tokens.tolist(), chosen.tolist())):
                row = alive[j]
                token_ids[row].append(token)
                logprobs[row].append(logprob)
                if token in stop_ids:
                    finish[row] = (FINISH_STOP, token)
                elif params.stop and (hit := matchers[row].find(self.decode(token_ids[row]))) is not None:
                    finish[row] = (FINISH_STOP, hit)
                elif len(token_ids[row]) >= params.max_new_tokens:
                    finish[row] = (FINISH_LENGTH, None)
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(index)
                attention_mask = attention_mask[index]
                next_position = next_position[index]
                tokens = tokens[index]
                alive = [alive[j] for j in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
            out = self.model(
                input_ids=tokens.unsqueeze(-1),
                attention_mask=attention_mask,
                position_ids=next_position.unsqueeze(-1),
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            next_position = next_position + 1
            logits = out.logits[:, -1, :]

        generations = []
        for row in range(batch):
            reason, stop_reason = finish[row] or (FINISH_LENGTH, None)
            generations.append(
                Generation(
                    token_ids=token_ids[row],
                    logprobs=logprobs[row],
                    finish_reason=reason,
                    text=self.decode(token_ids[row]),
                    stop_reason=stop_reason,
                )
            )
        return generations
