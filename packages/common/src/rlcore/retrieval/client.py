"""HTTP clients for the retrieval server (and any Search-R1-compatible ``/retrieve`` endpoint).

``RetrievalClient`` (sync) and ``AsyncRetrievalClient`` (asyncio) share the in-process interface
``search(queries, topk) -> list[list[Passage]]``. Large query lists are split into requests of at most
``batch_size`` queries.

Outages are ridden through: a transient failure (connection refused/reset, timeout, 502/503/504, 429) is
retried with capped exponential backoff and full jitter, ``delay_i = uniform(0, min(backoff_max,
backoff_base * 2**i))`` (or the server's ``Retry-After`` when larger, still capped), until the outage has lasted
``max_outage_s`` seconds (and, when ``max_retries`` is set, at most that many retries per request). Only then is
:class:`RetrievalUnavailableError` raised. One warning is logged when an outage starts, one per minute while it
lasts and one when the server answers again. 4xx answers (but 429) are not retried: they mean the request
itself is wrong, and the server's message is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

import httpx

from ..outage import OutageLog
from .types import Passage, RetrievalServerError, RetrievalUnavailableError

__all__ = ["RetrievalClient", "AsyncRetrievalClient", "TOKEN_ENV", "DEFAULT_MAX_OUTAGE_S"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_OUTAGE_S = 600.0
TOKEN_ENV = "RLCORE_RETRIEVER_TOKEN"
_RETRY_STATUS = {429, 502, 503, 504}
_TRANSIENT = (httpx.TransportError, httpx.TimeoutException)


class _Common:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        max_outage_s: float = DEFAULT_MAX_OUTAGE_S,
        max_retries: int | None = None,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        batch_size: int = 256,
        token: str | None = None,
        seed: int | None = None,
    ):
        self.url = url.rstrip("/")
        if self.url.endswith("/retrieve"):
            self.url = self.url[: -len("/retrieve")]
        if max_outage_s < 0:
            raise ValueError(f"max_outage_s must be >= 0, got {max_outage_s}")
        self.timeout, self.max_retries = timeout, max_retries
        self.max_outage_s = max_outage_s
        self._outage = OutageLog("retrieval server", self.url, max_outage_s, logger)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.batch_size = batch_size
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._rng = random.Random(seed)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self._rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** min(attempt, 60)))
        if response is not None:
            try:
                delay = max(delay, min(self.backoff_max, float(response.headers.get("retry-after", 0))))
            except ValueError:
                pass
        return delay

    def _batches(self, queries: list[str]) -> list[list[str]]:
        if isinstance(queries, str):
            raise TypeError("queries must be a list of strings, not a single string")
        return [list(queries[i : i + self.batch_size]) for i in range(0, len(queries), self.batch_size)]

    @staticmethod
    def _payload(queries: list[str], topk: int, return_scores: bool) -> dict[str, Any]:
        return {"queries": queries, "topk": topk, "return_scores": return_scores}

    def _parse(self, response: httpx.Response, expected: int) -> list[list[Passage]]:
        try:
            result = response.json()["result"]
        except (ValueError, KeyError) as err:
            raise RetrievalServerError(
                f"{self.url}/retrieve returned an unexpected body: {response.text[:200]!r}"
            ) from err
        if len(result) != expected:
            raise RetrievalServerError(
                f"{self.url}/retrieve returned {len(result)} result lists for {expected} queries"
            )
        return [[Passage.from_wire(item) for item in hits] for hits in result]

    def _error(self, response: httpx.Response) -> RetrievalServerError:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        return RetrievalServerError(
            f"{self.url}/retrieve answered {response.status_code}: {detail}", response.status_code
        )

    def _retry_delay(self, attempt: int, response: httpx.Response | None, reason: str) -> float | None:
        """Seconds to wait before retry ``attempt + 1``, or None when the outage budget (or ``max_retries``)
        is spent. Records the failure in the client's outage log."""
        elapsed = self._outage.failed(reason)
        if self.max_retries is not None and attempt >= self.max_retries:
            return None
        if elapsed >= self.max_outage_s:
            return None
        return min(self._delay(attempt, response), self.max_outage_s - elapsed)

    def _unavailable(self, attempts: int, last: str) -> RetrievalUnavailableError:
        started = self._outage.started
        lasted = 0.0 if started is None else self._outage.clock() - started
        return RetrievalUnavailableError(
            f"retrieval server at {self.url} unavailable after {attempts} attempt(s) "
            f"(outage {lasted:.0f}s, budget max_outage_s={self.max_outage_s:.0f}s): {last}. Is it running? "
            f"Start one with `make serve-retriever INDEX=<index folder> PORT=<port>` and check GET {self.url}/health"
        )


class RetrievalClient(_Common):
    """Blocking client: ``search``, ``health``, ``wait_until_ready``. Reuses one HTTP connection pool."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", transport: httpx.BaseTransport | None = None, **kwargs
    ):
        super().__init__(url, **kwargs)
        self._http = httpx.Client(timeout=self.timeout, headers=self.headers, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            response = None
            try:
                response = self._http.post(f"{self.url}/retrieve", json=payload)
                if response.status_code not in _RETRY_STATUS:
                    self._outage.recovered()
                    return response
                last = f"HTTP {response.status_code}"
            except _TRANSIENT as err:
                last = f"{type(err).__name__}: {err}"
            delay = self._retry_delay(attempt, response, last)
            if delay is None:
                raise self._unavailable(attempt + 1, last)
            time.sleep(delay)
            attempt += 1

    def search(self, queries: list[str], topk: int = 3, return_scores: bool = True) -> list[list[Passage]]:
        """Top-``topk`` passages per query (one list per query, in order)."""
        out: list[list[Passage]] = []
        for batch in self._batches(queries):
            response = self._post(self._payload(batch, topk, return_scores))
            if response.status_code != 200:
                raise self._error(response)
            out.extend(self._parse(response, len(batch)))
        return out

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` body; raises :class:`RetrievalUnavailableError` when unreachable."""
        try:
            return self._http.get(f"{self.url}/health").json()
        except (*_TRANSIENT, ValueError) as err:
            raise self._unavailable(1, f"{type(err).__name__}: {err}") from err

    def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> dict[str, Any]:
        """Poll ``/health`` until it reports ready (index loaded) or ``timeout`` seconds pass."""
        deadline, last = time.monotonic() + timeout, "not polled"
        while time.monotonic() < deadline:
            try:
                response = self._http.get(f"{self.url}/health")
                if response.status_code == 200:
                    return response.json()
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except _TRANSIENT as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(poll)
        raise RetrievalUnavailableError(
            f"retrieval server at {self.url} not ready after {timeout:.0f}s (last: {last})"
        )


class AsyncRetrievalClient(_Common):
    """asyncio client: ``await search(...)``; batches of one call run concurrently (``max_concurrency``)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        max_concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs,
    ):
        super().__init__(url, **kwargs)
        self.max_concurrency = max_concurrency
        limits = httpx.Limits(max_connections=max(100, 2 * max_concurrency))
        self._http = httpx.AsyncClient(
            timeout=self.timeout, headers=self.headers, limits=limits, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRetrievalClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _post(self, payload: dict[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            response = None
            try:
                response = await self._http.post(f"{self.url}/retrieve", json=payload)
                if response.status_code not in _RETRY_STATUS:
                    self._outage.recovered()
                    return response
                last = f"HTTP {response.status_code}"
            except _TRANSIENT as err:
                last = f"{type(err).__name__}: {err}"
            delay = self._retry_delay(attempt, response, last)
            if delay is None:
                raise self._unavailable(attempt + 1, last)
            await asyncio.sleep(delay)
            attempt += 1

    async def search(
        self, queries: list[str], topk: int = 3, return_scores: bool = True
    ) -> list[list[Passage]]:
        """Top-``topk`` passages per query; request batches run concurrently, results keep query order."""
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(batch: list[str]) -> list[list[Passage]]:
            async with semaphore:
                response = await self._post(self._payload(batch, topk, return_scores))
            if response.status_code != 200:
                raise self._error(response)
            return self._parse(response, len(batch))

        parts = await asyncio.gather(*(one(batch) for batch in self._batches(queries)))
        return [hits for part in parts for hits in part]

    async def health(self) -> dict[str, Any]:
        try:
            return (await self._http.get(f"{self.url}/health")).json()
        except (*_TRANSIENT, ValueError) as err:
            raise self._unavailable(1, f"{type(err).__name__}: {err}") from err

    async def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> dict[str, Any]:
        deadline, last = time.monotonic() + timeout, "not polled"
        while time.monotonic() < deadline:
            try:
                response = await self._http.get(f"{self.url}/health")
                if response.status_code == 200:
                    return response.json()
                last = f"HTTP {response.status_code}"
            except _TRANSIENT as err:
                last = f"{type(err).__name__}: {err}"
            await asyncio.sleep(poll)
        raise RetrievalUnavailableError(
            f"retrieval server at {self.url} not ready after {timeout:.0f}s (last: {last})"
        )
