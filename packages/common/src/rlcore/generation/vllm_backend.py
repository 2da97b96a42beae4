"""vLLM backends (gpu extra): a colocated ``vllm.LLM`` with weight sync and sleep mode, and an HTTP client for an
OpenAI-compatible vLLM server.

``vllm`` is imported inside :class:`VLLMBackend` only, so this module imports on a CPU install; the parameter
translation and output parsing are plain functions tested without vLLM.

Log-probs: the colocated engine is built with ``logprobs_mode="processed_logprobs"`` so the reported log-prob
of a sampled token is under the distribution after temperature / top-k / top-p, the same quantity
:class:`~rlcore.generation.hf_backend.HFBackend` returns. A server must be started with
``--logprobs-mode processed_logprobs`` for the same guarantee (checked by :meth:`VLLMServerBackend.check_server`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rlcore.generation.types import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams

__all__ = [
    "VLLMBackend",
    "VLLMServerBackend",
    "vllm_sampling_kwargs",
    "generations_from_vllm",
    "completions_payload",
    "generations_from_completions",
    "hf_named_tensors",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "vllm is not installed. It is a GPU-node-only extra: install the CUDA torch build first, then "
    "`pip install -r requirements/gpu.txt` (or `pip install -e 'packages/common[gpu]'`); on a CPU machine use "
    "HFBackend instead."
)


def vllm_sampling_kwargs(params: SamplingParams, skip_special_tokens: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` equivalent to ``params``.

    One sequence per prompt; ``logprobs=0`` returns the sampled token's log-prob only; stop strings are kept
    in the text (``include_stop_str_in_output``) so the text matches the returned ids; greedy is temperature 0.
    """
    params.validate()
    return {
        "n": 1,
        "max_tokens": params.max_new_tokens,
        "temperature": 0.0 if params.is_greedy else float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": params.top_k if params.top_k > 0 else -1,
        "stop": list(params.stop) or None,
        "stop_token_ids": list(params.stop_token_ids) or None,
        "seed": params.seed,
        "ignore_eos": params.ignore_eos,
        "logprobs": 0,
        "include_stop_str_in_output": True,
        "skip_special_tokens": skip_special_tokens,
    }


def _finish(reason: str | None) -> str:
    return FINISH_LENGTH if reason == "length" else FINISH_STOP


def generations_from_vllm(request_outputs: list[Any], decode) -> list[Generation]:
    """Our :class:`Generation` list from ``vllm.LLM.generate`` outputs (``RequestOutput``, one sequence each).

    ``decode(ids) -> str`` builds the text from the ids, so text and ids always agree (vLLM's own text is
    truncated at the stop string, while the ids keep the whole last token).
    """
    generations = []
    for index, request in enumerate(request_outputs):
        completion = request.outputs[0]
        token_ids = list(completion.token_ids)
        if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
            raise RuntimeError(
                f"vLLM output {index}: expected one log-prob entry per sampled token, got "
                f"{None if completion.logprobs is None else len(completion.logprobs)} for {len(token_ids)} tokens"
            )
        logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs, token_ids)]
        generations.append(
            Generation(
                token_ids,
                logprobs,
                _finish(completion.finish_reason),
                decode(token_ids),
                getattr(completion, "stop_reason", None),
            )
        )
    return generations


def completions_payload(
    prompts: list[list[int]], params: SamplingParams, model: str, skip_special_tokens: bool = True
) -> dict[str, Any]:
    """JSON body of a ``POST /v1/completions`` to a vLLM server for a batch of token-id prompts.

    vLLM extensions used: ``top_k``, ``stop_token_ids``, ``ignore_eos``, ``include_stop_str_in_output``,
    ``skip_special_tokens`` and ``return_tokens_as_token_ids`` (tokens come back as ``"token_id:<id>"``).
    """
    kwargs = vllm_sampling_kwargs(params, skip_special_tokens)
    body = {
        "model": model,
        "prompt": [list(p) for p in prompts],
        "max_tokens": kwargs["max_tokens"],
        "temperature": kwargs["temperature"],
        "top_p": kwargs["top_p"],
        "top_k": kwargs["top_k"],
        "n": 1,
        "logprobs": 1,
        "echo": False,
        "ignore_eos": kwargs["ignore_eos"],
        "include_stop_str_in_output": True,
        "skip_special_tokens": skip_special_tokens,
        "return_tokens_as_token_ids": True,
    }
    for key in ("stop", "stop_token_ids", "seed"):
        if kwargs[key] is not None:
            body[key] = kwargs[key]
    return body


def _token_id(token: str, where: str) -> int:
    if not token.startswith("token_id:"):
        raise RuntimeError(f"{where}: expected 'token_id:<id>' (return_tokens_as_token_ids), got {token!r}")
    return int(token.split(":", 1)[1])


def generations_from_completions(response: Mapping[str, Any], num_prompts: int, decode) -> list[Generation]:
    """Our :class:`Generation` list from a ``/v1/completions`` JSON response (choices ordered by ``index``)."""
    choices = sorted(response.get("choices", []), key=lambda choice: choice["index"])
    if len(choices) != num_prompts:
        raise RuntimeError(f"completions response: {len(choices)} choices for {num_prompts} prompts")
    generations = []
    for choice in choices:
        where = f"completions response choice {choice['index']}"
        logprobs = choice.get("logprobs") or {}
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        if tokens is None or values is None or len(tokens) != len(values):
            raise RuntimeError(f"{where}: missing or ragged logprobs (was logprobs=1 sent?)")
        token_ids = [_token_id(token, where) for token in tokens]
        generations.append(
            Generation(
                token_ids,
                [float(v) for v in values],
                _finish(choice.get("finish_reason")),
                decode(token_ids),
                choice.get("stop_reason"),
            )
        )
    return generations


def hf_named_tensors(model_or_state: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs in Hugging Face naming from a module or a state dict, for ``load_weights``.

    Wrapper prefixes that vLLM does not know are removed (``module.`` from DDP, ``_orig_mod.`` from
    ``torch.compile``).
    """
    items: Iterable[tuple[str, Any]]
    if isinstance(model_or_state, Mapping):
        items = model_or_state.items()
    else:
        items = model_or_state.state_dict().items()
    for name, tensor in items:
        for prefix in ("module.", "_orig_mod."):
            while name.startswith(prefix):
                name = name[len(prefix) :]
        yield name, tensor.detach()


class VLLMBackend:
    """Colocated vLLM engine on the trainer's GPU, with weight sync and sleep mode.

    Typical step: ``generate`` (rollouts) -> ``sleep()`` (frees the KV cache and offloads the weights while the
    trainer updates) -> ``update_weights(policy)`` (wakes the weights, loads the new HF state dict) ->
    ``generate`` (wakes the KV cache automatically). ``last_sync_seconds`` records the last weight-sync time.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        tokenizer=None,
        *,
        gpu_memory_utilization: float = 0.4,
        enable_sleep_mode: bool = True,
        dtype: str = "auto",
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        skip_special_tokens: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        try:
            import vllm
        except ImportError as err:
            raise ImportError(_INSTALL_HINT) from err
        # An in-process engine (as TRL's colocate mode does) so the model object is reachable for load_weights.
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29533"),
        ):
            os.environ.setdefault(key, value)
        self.model_path = str(model)
        self.skip_special_tokens = skip_special_tokens
        self.enable_sleep_mode = enable_sleep_mode
        self.llm = vllm.LLM(
            model=self.model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            enable_sleep_mode=enable_sleep_mode,
            logprobs_mode="processed_logprobs",
            distributed_executor_backend="external_launcher",
            **(engine_kwargs or {}),
        )
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self._vllm = vllm
        self._asleep_level: int | None = None
        self._weights_awake = True
        self.last_sync_seconds: float | None = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        self.wake_up()
        sampling = self._vllm.SamplingParams(**vllm_sampling_kwargs(params, self.skip_special_tokens))
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], sampling, use_tqdm=False
        )
        return generations_from_vllm(outputs, self._decode)

    def sleep(self, level: int = 1) -> None:
        """Free GPU memory between phases: level 1 offloads weights to CPU, level 2 discards them."""
        if not self.enable_sleep_mode:
            raise RuntimeError("VLLMBackend.sleep needs enable_sleep_mode=True at construction")
        if self._asleep_level is None:
            self.llm.sleep(level=level)
            self._asleep_level = level
            self._weights_awake = False

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Wake the weights and/or the KV cache (``tags`` in {"weights", "kv_cache"}; None = both)."""
        if self._asleep_level is None:
            return
        if tags is None:
            tags = [tag for tag in ("weights", "kv_cache") if tag != "weights" or not self._weights_awake]
        self.llm.wake_up(tags=tags)
        if "weights" in tags:
            self._weights_awake = True
            if self._asleep_level == 2:
                logger.warning(
                    "vLLM woke from sleep level 2: weights are garbage until update_weights() is called"
                )
        if "kv_cache" in tags:
            self._asleep_level = None

    def _inner_model(self):
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        runner = getattr(worker, "model_runner", None) or worker.worker.model_runner
        return runner.model

    def update_weights(self, model_or_state: Any) -> None:
        """Copy the policy's current weights (HF module or state dict) into the engine."""
        import torch

        start = time.perf_counter()
        if self._asleep_level is not None and not self._weights_awake:
            torch.cuda.empty_cache()
            self.wake_up(tags=["weights"])
        self._inner_model().load_weights(hf_named_tensors(model_or_state))
        self.llm.reset_prefix_cache()
        torch.cuda.synchronize()
        self.last_sync_seconds = time.perf_counter() - start


class VLLMServerBackend:
    """Client of an OpenAI-compatible vLLM server (``vllm serve MODEL --logprobs-mode processed_logprobs``).

    Sends token-id prompts to ``/v1/completions`` in one batched request per ``generate`` call. Weight sync is
    not part of the OpenAI API, so :meth:`update_weights` raises: use this for evaluation or a frozen policy,
    and the colocated :class:`VLLMBackend` for training.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer,
        model: str,
        *,
        api_key_env: str = "VLLM_API_KEY",
        timeout: float = 600.0,
        skip_special_tokens: bool = True,
        transport=None,
    ):
        import httpx

        headers = {}
        if os.environ.get(api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
        self.tokenizer = tokenizer
        self.model = model
        self.skip_special_tokens = skip_special_tokens
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def check_server(self) -> dict[str, Any]:
        """``GET /v1/models``; raises if ``self.model`` is not served."""
        response = self.client.get("/v1/models")
        response.raise_for_status()
        served = [entry["id"] for entry in response.json().get("data", [])]
        if self.model not in served:
            raise RuntimeError(f"vLLM server does not serve model '{self.model}' (serves {served})")
        return response.json()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        body = completions_payload(prompts, params, self.model, self.skip_special_tokens)
        response = self.client.post("/v1/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"vLLM server {response.request.url}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return generations_from_completions(response.json(), len(prompts), self._decode)

    def update_weights(self, model_or_state: Any = None) -> None:
        raise NotImplementedError(
            "VLLMServerBackend cannot receive weights over the OpenAI API; train with the colocated VLLMBackend "
            "(or HFBackend), or restart the server from a saved checkpoint"
        )
