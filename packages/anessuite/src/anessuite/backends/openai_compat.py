"""Client for any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, hosted APIs).

Fixes the official evaluator's request loop (an unbounded immediate retry that spins
forever on a 400):

* ``concurrency`` requests in flight, a per-request timeout.
* **Endpoint errors stop the run.** A 4xx answer other than 408/409/425/429 (401/403 bad key, 404 unknown route or
  model, 400 a request the server rejects) raises :class:`EndpointError` carrying the server's own message; the
  requests still in flight are dropped. Nothing of a failed request is returned, so nothing reaches the response
  cache, and a re-run asks exactly for the items without a response.
* **Outages are ridden out.** Connection errors, timeouts and HTTP 502/503/504 are retried with capped exponential
  backoff (jitter) for as long as the outage lasts, up to ``max_outage_s`` (default 600 s); one log line when it
  starts, one a minute while it lasts, one when the server answers again. Past the budget
  :class:`ServerUnavailableError` stops the run. 429/500/408/409/425 are retried at most ``max_retries`` times.
* **Which model** is checked once against ``GET /models``: a name the server does not serve fails before any
  question is sent, listing what it does serve. Its model-list entry and an optional user ``revision`` form the
  cache fingerprint; served weights cannot be fingerprinted, and a warning says so.
* **Reasoning models**: ``extra_body`` is merged into every request (e.g. ``{"top_k": 1}``),
  ``chat_template_kwargs`` is sent as that field (vLLM/SGLang: e.g. ``{"enable_thinking": false}``), the
  length cap can be sent as ``max_completion_tokens`` for endpoints that require it, and a separate
  ``reasoning_content`` (or ``reasoning``) is kept beside the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

from anessuite.backends import Completion, Messages
from rlcore.outage import OutageLog

__all__ = [
    "OpenAIChatBackend",
    "EndpointError",
    "ServerError",
    "ServerUnavailableError",
    "RETRYABLE_STATUS",
    "OUTAGE_STATUS",
]

logger = logging.getLogger(__name__)

OUTAGE_STATUS = frozenset({502, 503, 504})
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500})
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")


class ServerError(RuntimeError):
    """A request still failed after ``max_retries`` retries (429/500/...), or the server sent a malformed answer."""


class EndpointError(ServerError):
    """The server rejected a request (4xx): wrong key, model name, route or request. Carries its message."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerUnavailableError(ServerError):
    """The server stayed unreachable (or 502/503/504) for longer than the outage budget."""


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI shape ``{"error": {"message"}}``, FastAPI ``detail``)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        for key in ("message", "detail", "error"):
            if payload.get(key):
                return str(payload[key])[:500]
    return response.text[:500]


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
        chat_template_kwargs: dict[str, Any] | None = None,
        max_tokens_field: str = "max_tokens",
        revision: str | None = None,
        max_outage_s: float = 600.0,
    ):
        if concurrency < 1:
            raise ValueError(f"backend.concurrency must be >= 1, got {concurrency}")
        if max_tokens_field not in MAX_TOKENS_FIELDS:
            raise ValueError(
                f"backend.max_tokens_field must be one of {MAX_TOKENS_FIELDS}, got {max_tokens_field!r}"
            )
        if max_outage_s < 0:
            raise ValueError(f"backend.max_outage_s must be >= 0, got {max_outage_s}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        if chat_template_kwargs:
            self.extra_body["chat_template_kwargs"] = dict(chat_template_kwargs)
        self.max_tokens_field = max_tokens_field
        self.revision = revision
        self.max_outage_s = max_outage_s
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency)
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, limits=limits)
        self._jitter = random.Random(0)
        self._lock = threading.Lock()
        self._outage = OutageLog("model server", self.base_url, max_outage_s, logger)
        self._entry: dict[str, Any] | None = None
        self._entry_checked = False
        self._stop = threading.Event()  # set when a run stops: abandoned requests give up at their next retry
        self.stats = {"requests": 0, "retries": 0, "outage_retries": 0}

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ one HTTP call with the retry policy

    def _delay(self, attempt: int) -> float:
        with self._lock:
            jitter = self._jitter.uniform(0.5, 1.0)
        return min(self.max_backoff_s, self.backoff_s * (2**attempt)) * jitter

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """A 2xx response, or an exception: EndpointError (4xx), ServerUnavailableError (outage beyond the
        budget), ServerError (retries of 429/500/... exhausted)."""
        retries = outage_attempt = 0
        while True:
            if self._stop.is_set():
                raise ServerError(f"{self.base_url}{path}: abandoned, the run stopped")
            self._count("requests")
            try:
                response = self.client.request(method, path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                problem, status = f"{type(err).__name__}: {err}", None
            else:
                status = response.status_code
                if status < 300:
                    self._outage.recovered()
                    return response
                problem = f"HTTP {status}: {_server_message(response)}"
                if status not in OUTAGE_STATUS and status not in RETRYABLE_STATUS:
                    raise EndpointError(f"{self.base_url}{path} rejected the request ({problem})", status)
            if status is None or status in OUTAGE_STATUS:
                lasted = self._outage.failed(problem)
                if lasted >= self.max_outage_s:
                    raise ServerUnavailableError(
                        f"{self.base_url}: no answer for {lasted:.0f} s (outage budget backend.max_outage_s="
                        f"{self.max_outage_s:.0f} s): {problem}. Is the server running? Re-running the same "
                        "command asks only for the items without a response."
                    )
                self._count("outage_retries")
                self._stop.wait(min(self._delay(outage_attempt), max(0.05, self.max_outage_s - lasted)))
                outage_attempt += 1
                continue
            if retries >= self.max_retries:
                raise ServerError(
                    f"{self.base_url}{path}: failed after {self.max_retries} retries: {problem}"
                )
            self._count("retries")
            logger.info("retrying after %s (retry %d of %d)", problem, retries + 1, self.max_retries)
            self._stop.wait(self._delay(retries))
            retries += 1

    # ------------------------------------------------------------------ identity of the served model

    def model_entry(self) -> dict[str, Any] | None:
        """The server's ``GET /models`` entry for ``model`` (fetched once). EndpointError when the server lists
        models but not this one; None (with a warning) when the server has no model list."""
        if self._entry_checked:
            return self._entry
        try:
            payload = self._call("GET", "/models").json()
        except EndpointError as err:
            if err.status not in (404, 405, 501):  # 401/403: the key is wrong for every request, stop now
                raise
            logger.warning(
                "%s: no model list (%s); the served model's name is not checked", self.base_url, err
            )
            self._entry_checked = True
            return None
        entries = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            raise ServerError(f"{self.base_url}/models: malformed model list: {str(payload)[:300]}")
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                self._entry, self._entry_checked = entry, True
                return entry
        served = [entry.get("id") for entry in entries if isinstance(entry, dict)]
        raise EndpointError(f"{self.base_url} does not serve model '{self.model}'; it serves {served}", 404)

    def fingerprint(self) -> str:
        """Server URL + model name + its model-list entry + the user's ``revision``. Served weights cannot be
        fingerprinted: a server restarted with other weights under the same name and entry looks the same."""
        entry = self.model_entry()
        logger.warning(
            "%s: the weights behind served model '%s' cannot be fingerprinted; the response cache is keyed by the "
            "server's model-list entry%s. Set backend.revision when the served weights change.",
            self.base_url,
            self.model,
            f" and revision '{self.revision}'" if self.revision else " only",
        )
        identity = json.dumps(
            {"server": self.base_url, "model": self.model, "entry": entry, "revision": self.revision},
            sort_keys=True,
        )
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ completions

    def request(self, messages: Messages, max_new_tokens: int) -> Completion:
        """One greedy chat completion (see the module docstring for errors and retries)."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            self.max_tokens_field: max_new_tokens,
            "n": 1,
            "stream": False,
            **self.extra_body,
        }
        return self._parse(self._call("POST", "/chat/completions", body).json())

    @staticmethod
    def _parse(payload: dict[str, Any]) -> Completion:
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ServerError(f"malformed chat-completions response: {str(payload)[:300]}") from err
        reasoning = message.get("reasoning_content") or message.get("reasoning") or None
        usage = payload.get("usage") or {}
        return Completion(
            text=text,
            num_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            reasoning=reasoning if isinstance(reasoning, str) else None,
        )

    def complete(
        self, conversations: Sequence[Messages], max_new_tokens: int
    ) -> Iterator[tuple[int, Completion]]:
        """At most ``concurrency`` requests in flight; results are yielded as they arrive. The first request that
        fails for good raises here; the ones still in flight are abandoned (never yielded)."""
        if conversations:
            self.model_entry()  # a wrong model name fails before any question is sent
        pending: dict[Future, int] = {}
        queue = iter(range(len(conversations)))
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="anessuite-http")
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
            self._stop.set()
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
