"""Offline vLLM engine for evaluation (gpu extra; ``vllm`` is imported only when this backend is built).

Prompts are rendered with the model's own chat template by our tokenizer code (the same ids the HF backend
would see), then sent to ``LLM.generate`` in chunks so finished chunks reach the cache while the rest runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from anessuite.backends import Completion, Messages
from anessuite.backends.hf import encode_chat
from anessuite.cache import model_fingerprint
from rlcore.models import resolve_model_path

__all__ = ["VLLMChatBackend"]

_INSTALL_HINT = "the vllm backend needs the gpu extra: pip install -r requirements/gpu.txt (CUDA machine)"


class VLLMChatBackend:
    name = "vllm"

    def __init__(
        self,
        model: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        max_model_len: int | None = None,
        chunk_size: int = 1024,
        seed: int = 0,
        engine_kwargs: dict[str, Any] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        try:
            import vllm
        except ImportError as err:
            raise ImportError(_INSTALL_HINT) from err

        self.model_dir = resolve_model_path(model)
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=str(self.model_dir),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            **(engine_kwargs or {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.chunk_size = chunk_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def fingerprint(self) -> str:
        return model_fingerprint(self.model_dir)

    def complete(
        self, conversations: Sequence[Messages], max_new_tokens: int
    ) -> Iterator[tuple[int, Completion]]:
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, n=1)
        prompts = [
            encode_chat(self.tokenizer, m, template_kwargs=self.chat_template_kwargs) for m in conversations
        ]
        for start in range(0, len(prompts), self.chunk_size):
            chunk = list(range(start, min(start + self.chunk_size, len(prompts))))
            outputs = self.llm.generate(
                [{"prompt_token_ids": prompts[i]} for i in chunk], params, use_tqdm=False
            )
            for index, output in zip(chunk, outputs):
                sample = output.outputs[0]
                yield (
                    index,
                    Completion(
                        text=sample.text, num_tokens=len(sample.token_ids), finish_reason=sample.finish_reason
                    ),
                )
