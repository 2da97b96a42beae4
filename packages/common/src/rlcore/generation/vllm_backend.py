"""vLLM backends (gpu extra): a colocated ``vllm.LLM`` with weight sync and sleep mode, and an HTTP client for an
OpenAI-compatible vLLM server.

``vllm`` is imported inside :class:`VLLMBackend` only, so this module imports on a CPU install; the parameter
translation and output parsing are plain functions tested without vLLM.

Log-probs: the colocated engine is built with ``logprobs_mode="processed_logprobs"`` so the reported log-prob
of a sampled token is under the distribution after temperature / top-k / top-p, the same quantity
:class:`~rlcore.generation.hf_backend.HFBackend` returns. A server must be started with
``--logprobs-mode processed_logprobs`` for the same guarantee (checked by :meth:`VLLMServerBackend.check_server`).

Seeds: a seeded call (``SamplingParams.seed``) gives every prompt its own seed derived from the call's seed,
the row and the rank (:func:`vllm_request_kwargs`); one seed for all rows would make the G copies of a GRPO group
sample identical completions. The colocated engine's own seed differs per rank, and building the engine leaves
the process's Python / NumPy / torch RNG states as they were (vLLM's worker re-seeds them in-process).

Context length: vLLM rejects a whole batch when one prompt leaves no room under ``max_model_len``. Both backends
send only the rows that fit and answer the others with an empty ``length``-finished generation whose
``stop_reason`` is :data:`CONTEXT_FULL`, logged per row (:func:`rows_within_context`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlcore.generation.types import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams
from rlcore.seeding import derive_seed, get_rng_state, set_rng_state

__all__ = [
    "CONTEXT_FULL",
    "VLLMBackend",
    "VLLMServerBackend",
    "vllm_sampling_kwargs",
    "vllm_request_kwargs",
    "rows_within_context",
    "engine_seed",
    "merge_refused",
    "logprobs_mode_probe",
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


def vllm_request_kwargs(
    params: SamplingParams, num_prompts: int, skip_special_tokens: bool = True, rank: int = 0
) -> list[dict[str, Any]]:
    """One ``vllm.SamplingParams`` keyword dict per prompt: :func:`vllm_sampling_kwargs` with its own seed.

    A seeded call gives row ``i`` on rank ``r`` the seed ``derive_seed(params.seed, "vllm-request", r, i)``:
    distinct across the rows of a call (the G copies of a group must differ) and across ranks, and the same
    on a rerun. Unseeded and greedy calls keep ``seed=None`` (the engine's generator / no sampling).
    """
    base = vllm_sampling_kwargs(params, skip_special_tokens)
    if params.seed is None or params.is_greedy:
        return [dict(base, seed=None) for _ in range(num_prompts)]
    return [
        dict(base, seed=derive_seed(params.seed, "vllm-request", rank, row)) for row in range(num_prompts)
    ]


def engine_seed(train_seed: int, rank: int) -> int:
    """The colocated engine's seed on ``rank``: its default generator must not be the same on every rank."""
    return derive_seed(train_seed, "vllm-engine", rank)


def rows_within_context(prompts: list[list[int]], max_model_len: int | None) -> tuple[list[int], list[int]]:
    """(rows to send, rows refused): vLLM needs ``len(prompt) + 1 <= max_model_len`` for every row of a batch
    and fails the whole batch otherwise; a row that leaves no room for one new token is refused on its own."""
    if max_model_len is None:
        return list(range(len(prompts))), []
    sendable, refused = [], []
    for row, prompt in enumerate(prompts):
        (sendable if len(prompt) < max_model_len else refused).append(row)
    return sendable, refused


# stop_reason of the empty generation answering a prompt with no room left under max_model_len
CONTEXT_FULL = "context_full"


def merge_refused(
    prompts: list[list[int]], sendable: list[int], generated: list[Generation], max_model_len: int | None
) -> list[Generation]:
    """One generation per prompt: ``generated`` (for the ``sendable`` rows, in order) and, for every other row,
    an empty ``length`` generation with ``stop_reason=CONTEXT_FULL``, logged with the row's length."""
    merged: dict[int, Generation] = dict(zip(sendable, generated, strict=True))
    out = []
    for row, prompt in enumerate(prompts):
        if row not in merged:
            logger.warning(
                "vLLM: prompt row %d has %d tokens, leaving no room under max_model_len=%s; answered with an "
                "empty 'length' generation (raise max_model_len or shorten the context)",
                row,
                len(prompt),
                max_model_len,
            )
            merged[row] = Generation([], [], FINISH_LENGTH, "", CONTEXT_FULL)
        out.append(merged[row])
    return out


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
    prompts: list[list[int]],
    params: SamplingParams,
    model: str,
    skip_special_tokens: bool = True,
    seed: int | None = None,
) -> dict[str, Any]:
    """JSON body of a ``POST /v1/completions`` to a vLLM server for a batch of token-id prompts.

    vLLM extensions used: ``top_k``, ``stop_token_ids``, ``ignore_eos``, ``include_stop_str_in_output``,
    ``skip_special_tokens`` and ``return_tokens_as_token_ids`` (tokens come back as ``"token_id:<id>"``).
    The request's ``seed`` applies to every prompt in it, so a seeded batch is sent one prompt per request
    with the seeds of :func:`vllm_request_kwargs` (see :meth:`VLLMServerBackend.generate`).
    """
    kwargs = dict(vllm_sampling_kwargs(params, skip_special_tokens), seed=seed)
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


def logprobs_mode_probe(tokenizer, model: str):
    """(request body, judge) that tell a server in ``processed_logprobs`` mode from one in the default raw mode.

    The probe samples one token with ``top_k=1`` at temperature 1. Under processed log-probs the distribution
    after top-k filtering is a point mass, so the token's log-prob is exactly 0; raw log-probs report the
    model's own probability of the arg-max token, below 1 for these open-ended prompts. ``judge(response)``
    raises with the fix when any probe row is not ~0.
    """
    prompts = [tokenizer.encode(text, add_special_tokens=False) for text in ("The", "One of the")]
    body = {
        "model": model,
        "prompt": prompts,
        "max_tokens": 1,
        "temperature": 1.0,
        "top_k": 1,
        "logprobs": 1,
        "return_tokens_as_token_ids": True,
    }

    def judge(response: Mapping[str, Any]) -> None:
        values = [float(choice["logprobs"]["token_logprobs"][0]) for choice in response.get("choices", [])]
        if len(values) != len(prompts) or any(abs(value) > 1e-4 for value in values):
            raise RuntimeError(
                f"vLLM server reports raw log-probs (top-k=1 probe gave {values}, processed mode gives 0.0): "
                "start it with `--logprobs-mode processed_logprobs` (infra/serve_vllm.sh does), or the "
                "rollout log-probs will not match the trainer's"
            )

    return body, judge


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
        rank: int | None = None,
    ):
        """``seed`` is the run's seed; the engine gets :func:`engine_seed` of it for ``rank`` (default: the
        ``RANK`` environment variable of the launcher, else 0)."""
        try:
            import vllm
        except ImportError as err:
            raise ImportError(_INSTALL_HINT) from err
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
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
        # vLLM's worker runs in this process (external launcher) and calls random/np/torch manual_seed with the
        # engine seed: keep the trainer's per-rank RNG streams as they were before the engine existed.
        rng_state = get_rng_state()
        self.llm = vllm.LLM(
            model=self.model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            seed=engine_seed(seed, self.rank),
            enable_sleep_mode=enable_sleep_mode,
            logprobs_mode="processed_logprobs",
            distributed_executor_backend="external_launcher",
            **(engine_kwargs or {}),
        )
        set_rng_state(rng_state)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self._vllm = vllm
        self._asleep_level: int | None = None
        self._weights_awake = True
        self.last_sync_seconds: float | None = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        self.wake_up()
        sendable, _ = rows_within_context(prompts, self.max_model_len)
        kwargs = vllm_request_kwargs(params, len(prompts), self.skip_special_tokens, self.rank)
        generated: list[Generation] = []
        if sendable:
            outputs = self.llm.generate(
                [{"prompt_token_ids": list(prompts[row])} for row in sendable],
                [self._vllm.SamplingParams(**kwargs[row]) for row in sendable],
                use_tqdm=False,
            )
            generated = generations_from_vllm(outputs, self._decode)
        return merge_refused(prompts, sendable, generated, self.max_model_len)

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
        # torch is heavy (~1 s to import) and only this path needs it
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
        rank: int | None = None,
        max_parallel_requests: int = 32,
    ):
        # httpx costs ~0.12 s to import and only this HTTP path needs it
        import httpx

        headers = {}
        if os.environ.get(api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
        self.tokenizer = tokenizer
        self.model = model
        self.skip_special_tokens = skip_special_tokens
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.max_parallel_requests = max_parallel_requests
        self.max_model_len: int | None = None  # read from /v1/models by check_server
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def check_server(self) -> dict[str, Any]:
        """``GET /v1/models`` (raises if ``self.model`` is not served; records its ``max_model_len``), then a probe
        that the server reports processed log-probs (see :func:`logprobs_mode_probe`); returns the model list."""
        response = self.client.get("/v1/models")
        response.raise_for_status()
        entries = {entry["id"]: entry for entry in response.json().get("data", [])}
        if self.model not in entries:
            raise RuntimeError(f"vLLM server does not serve model '{self.model}' (serves {list(entries)})")
        if entries[self.model].get("max_model_len") is not None:
            self.max_model_len = int(entries[self.model]["max_model_len"])
        body, judge = logprobs_mode_probe(self.tokenizer, self.model)
        probe = self.client.post("/v1/completions", json=body)
        if probe.status_code != 200:
            raise RuntimeError(f"vLLM server log-prob probe: HTTP {probe.status_code}: {probe.text[:500]}")
        judge(probe.json())
        return response.json()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        sendable, _ = rows_within_context(prompts, self.max_model_len)
        rows = [prompts[row] for row in sendable]
        generated: list[Generation] = []
        if rows and (params.seed is None or params.is_greedy):
            generated = self._complete(
                completions_payload(rows, params, self.model, self.skip_special_tokens)
            )
        elif rows:  # one request per row: a request's seed applies to all of its prompts
            seeds = [
                vllm_request_kwargs(params, len(prompts), rank=self.rank)[row]["seed"] for row in sendable
            ]
            bodies = [
                completions_payload([row], params, self.model, self.skip_special_tokens, seed=seed)
                for row, seed in zip(rows, seeds)
            ]
            with ThreadPoolExecutor(max_workers=min(len(bodies), self.max_parallel_requests)) as pool:
                generated = [one[0] for one in pool.map(self._complete, bodies)]
        return merge_refused(prompts, sendable, generated, self.max_model_len)

    def _complete(self, body: dict[str, Any]) -> list[Generation]:
        response = self.client.post("/v1/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"vLLM server {response.request.url}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return generations_from_completions(response.json(), len(body["prompt"]), self._decode)

    def update_weights(self, model_or_state: Any = None) -> None:
        raise NotImplementedError(
            "VLLMServerBackend cannot receive weights over the OpenAI API; train with the colocated VLLMBackend "
            "(or HFBackend), or restart the server from a saved checkpoint"
        )
