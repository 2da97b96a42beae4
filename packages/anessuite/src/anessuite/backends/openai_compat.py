"""Client for any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, ...).

Fixes the official evaluator's request loop (spec section 3.2, defect 4): requests run ``concurrency`` at a
time with a per-request timeout; transient failures (connection errors, timeouts, HTTP 408/409/429/5xx) are
retried at most ``max_retries`` times with exponential backoff and jitter; any other 4xx (e.g. a prompt longer
than the context) is final at once and comes back as a :class:`Completion` with ``error`` set. A request that
exhausts its retries raises, so the run stops and a re-run resumes from the cache.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from anessuite.backends import Completion, Messages
from anessuite.cache import model_fingerprint

__all__ = ["OpenAIChatBackend", "ServerError", "RETRYABLE_STATUS"]

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerError(RuntimeError):
    """A request still failed after every retry."""


class OpenAIChatBackend:
    """Chat completions over HTTP; ``base_url`` ends in ``/v1``. The API key is read from ``api_key_env``."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        concurrency: int = 16,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        api_key_env: str = "OPENAI_API_KEY",
        extra_body: dict[str, Any] | None = None,
    ):
        if concurrency < 1:
            raise ValueError(f"backend.concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, limits=limits)
        self._jitter = random.Random(0)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "final_errors": 0}

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def fingerprint(self) -> str:
        return model_fingerprint(server=f"{self.base_url}|{self.model}")

    def close(self) -> None:
        self.client.close()

    def _sleep_before_retry(self, attempt: int) -> None:
        with self._lock:
            jitter = self._jitter.uniform(0.5, 1.0)
        time.sleep(min(self.max_backoff_s, self.backoff_s * (2**attempt)) * jitter)

    def request(self, messages: Messages, max_new_tokens: int) -> Completion:
        """One greedy chat completion with bounded retries (see the module docstring)."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": max_new_tokens,
            "n": 1,
            "stream": False,
            **self.extra_body,
        }
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            self._count("requests")
            try:
                response = self.client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last_problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 200:
                    return self._parse(response.json())
                detail = response.text[:300]
                if response.status_code not in RETRYABLE_STATUS:
                    self._count("final_errors")
                    logger.warning(
                        "request rejected with HTTP %d (not retried): %s", response.status_code, detail
                    )
                    return Completion(text="", error=f"HTTP {response.status_code}: {detail}")
                last_problem = f"HTTP {response.status_code}: {detail}"
            if attempt < self.max_retries:
                self._count("retries")
                logger.info(
                    "retrying after %s (attempt %d of %d)", last_problem, attempt + 1, self.max_retries
                )
                self._sleep_before_retry(attempt)
        raise ServerError(f"{self.base_url}: request failed after {self.max_retries} retries: {last_problem}")

    @staticmethod
    def _parse(payload: dict[str, Any]) -> Completion:
        try:
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ServerError(f"malformed chat-completions response: {str(payload)[:300]}") from err
        usage = payload.get("usage") or {}
        return Completion(
            text=text, num_tokens=usage.get("completion_tokens"), finish_reason=choice.get("finish_reason")
        )

    def complete(
        self, conversations: Sequence[Messages], max_new_tokens: int
    ) -> Iterator[tuple[int, Completion]]:
        """At most ``concurrency`` requests in flight; results are yielded as they arrive."""
        pending: dict[Future, int] = {}
        queue = iter(range(len(conversations)))
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="anessuite-http") as pool:
            try:
                for index in queue:
                    pending[pool.submit(self.request, conversations[index], max_new_tokens)] = index
                    if len(pending) >= self.concurrency:
                        break
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = pending.pop(future)
                        yield index, future.result()
                        following = next(queue, None)
                        if following is not None:
                            pending[pool.submit(self.request, conversations[following], max_new_tokens)] = (
                                following
                            )
            finally:
                for future in pending:
                    future.cancel()
