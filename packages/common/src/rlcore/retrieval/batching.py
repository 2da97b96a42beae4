"""Dynamic micro-batching and Prometheus metrics for the retrieval server.

Requests land in one in-memory queue. ``num_workers`` dedicated worker threads (default 2, one per core of a
small box) take batches from it: every queued request, up to ``max_batch_queries`` queries, becomes one encode
+ one index search per distinct ``topk``. A worker that finishes a batch takes the next one itself, with no
event-loop turn in between; the event loop only queues requests and hands out answers, so it keeps reading and
writing sockets while the encoder computes.

When to start a second batch beside a running one is the whole policy (``parallel_min_queries``, default 8):
only while the running batches hold fewer queries than that, or once that many are queued. At concurrency 2
two single-query requests therefore compute side by side on two cores (a batch of 2 would take 1.4x a batch
of 1 on one core); under load both workers run batches of at least 8 queries, where the encoder is efficient,
instead of splitting 32 clients into batches of 2-3. A worker that finds several requests queued while its
partner is idle takes half, so a few large requests use both cores, and two clients whose requests arrive
together are not locked into one merged batch after another. Nobody waits on a timer unless ``max_wait``
(default 0) is set: then a worker about to start beside a running batch lets a small queue grow that long. ``max_queue_queries`` bounds queued plus in-flight queries; beyond it ``submit`` raises
:class:`Overloaded` and the server answers 503.

A lone request skips all of this (:meth:`MicroBatcher.lone`, :meth:`MicroBatcher.run_inline`): when nothing is
queued or computing and the request before it came from the same connection into an equally empty server (a client
sending request after request with nobody else around), the server computes it right on the event-loop thread,
with no queue entry, future, worker wake-up or loop wake-up. A request from any other connection goes to the
workers, so a second client waits at most one lone request's compute before the loop reads it, and from then on
both run on the workers.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Overloaded", "MicroBatcher", "Metrics", "Histogram"]

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full; the caller should answer 503 with Retry-After."""


class Histogram:
    """Cumulative-bucket histogram in the Prometheus text format."""

    def __init__(self, buckets: list[float]):
        self.buckets = sorted(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]
        return lines


@dataclass
class Metrics:
    """Server counters; rendered by ``GET /metrics``. Updated under a lock (worker thread + event loop)."""

    requests: dict[int, int] = field(default_factory=dict)  # by HTTP status
    queries: int = 0
    latency: Histogram = field(
        default_factory=lambda: Histogram(
            [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        )
    )
    batch_queries: Histogram = field(
        default_factory=lambda: Histogram([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    )
    batch_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
        )
    )
    inline_requests: int = 0  # lone requests computed on the event-loop thread
    queue_depth: Callable[[], tuple[int, int]] = lambda: (0, 0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_request(self, status: int, seconds: float, num_queries: int = 0) -> None:
        with self.lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.queries += num_queries
            self.latency.observe(seconds)

    def record_batch(self, num_queries: int, seconds: float, inline: bool = False) -> None:
        with self.lock:
            self.inline_requests += inline
            self.batch_queries.observe(num_queries)
            self.batch_seconds.observe(seconds)

    def render(self) -> str:
        with self.lock:
            queued_requests, queued_queries = self.queue_depth()
            lines = [
                "# HELP retrieval_requests_total HTTP requests to /retrieve by status.",
                "# TYPE retrieval_requests_total counter",
            ]
            lines += [
                f'retrieval_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())
            ]
            lines += [
                "# HELP retrieval_queries_total Queries answered.",
                "# TYPE retrieval_queries_total counter",
                f"retrieval_queries_total {self.queries}",
            ]
            lines += self.latency.render(
                "retrieval_request_latency_seconds", "Latency of /retrieve requests."
            )
            lines += [
                "# HELP retrieval_inline_requests_total Lone requests computed on the event-loop thread.",
                "# TYPE retrieval_inline_requests_total counter",
                f"retrieval_inline_requests_total {self.inline_requests}",
            ]
            lines += self.batch_queries.render("retrieval_batch_queries", "Queries per encode+search batch.")
            lines += self.batch_seconds.render("retrieval_batch_seconds", "Encode+search time per batch.")
            lines += [
                "# HELP retrieval_queue_requests Requests queued or in flight.",
                "# TYPE retrieval_queue_requests gauge",
                f"retrieval_queue_requests {queued_requests}",
                "# HELP retrieval_queue_queries Queries queued or in flight.",
                "# TYPE retrieval_queue_queries gauge",
                f"retrieval_queue_queries {queued_queries}",
            ]
            return "\n".join(lines) + "\n"


@dataclass
class _Job:
    queries: list[str]
    topk: int
    payload: object  # passed through to ``process``
    future: asyncio.Future
    enqueued: float  # time.monotonic() at submit


class MicroBatcher:
    """Merge concurrent requests into calls of ``process(batch) -> list[result]`` on worker threads.

    ``process`` receives ``[(queries, topk, payload), ...]`` and returns one result per entry. Each worker is a
    dedicated thread that takes its next batch straight from the queue when it finishes one, so neither the
    start of a batch nor the step from one batch to the next waits for an event-loop turn; the loop only
    queues requests and hands out answers. A batch starts at once when no other batch computes. Beside a
    running batch, a second one starts only while the running batches hold fewer than ``parallel_min_queries``
    queries, or once that many are queued: low load runs requests side by side on separate cores, high load
    forms batches big enough to keep the encoder efficient. A worker that finds a large queue and an idle
    partner takes half of it, so both cores share big requests too.
    """

    def __init__(
        self,
        process: Callable[[list[tuple[list[str], int, object]]], list],
        max_batch_queries: int = 256,
        max_wait: float = 0.0,
        max_queue_queries: int = 4096,
        metrics: Metrics | None = None,
        num_workers: int = 2,
        max_queue_wait: float = 0.0,
        parallel_min_queries: int = 8,
        inline_max_queries: int = 1,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if parallel_min_queries < 1:
            raise ValueError(f"parallel_min_queries must be at least 1, got {parallel_min_queries}")
        self.process = process
        self.max_batch_queries, self.max_wait, self.max_queue_queries = (
            max_batch_queries,
            max_wait,
            max_queue_queries,
        )
        self.metrics = metrics or Metrics()
        self.metrics.queue_depth = lambda: (self.pending_requests, self.pending_queries)
        self.num_workers = num_workers
        self.max_queue_wait = max_queue_wait  # seconds a request may wait before it is shed (0: no limit)
        self.parallel_min_queries = parallel_min_queries
        self.inline_max_queries = inline_max_queries  # largest lone request computed on the loop (0: none)
        self._last_source: object = None  # the latest request's connection if it found us empty, else None
        # event-loop thread only: requests accepted and not yet answered (queued + computing)
        self.pending_requests = self.pending_queries = 0
        # shared with the workers, under ``_cond``: the queue and what computes
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._queued_queries = 0
        self.in_flight = 0  # batches being computed
        self._running_queries = 0
        self._idle_workers = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained: asyncio.Event | None = None
        self._closing = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._drained.set()
        self._threads = [
            threading.Thread(target=self._work, name=f"retrieval-batch-{i}", daemon=True)
            for i in range(self.num_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, queries: list[str], topk: int, payload: object = None) -> asyncio.Future:
        """Queue a request; raises :class:`Overloaded` when it would exceed ``max_queue_queries``."""
        if self._closing:
            raise Overloaded("server is shutting down")
        if self.pending_queries and self.pending_queries + len(queries) > self.max_queue_queries:
            raise Overloaded(f"{self.pending_queries} queries queued (limit {self.max_queue_queries})")
        future = self._loop.create_future()
        job = _Job(queries, topk, payload, future, time.monotonic())
        self.pending_requests += 1
        self.pending_queries += len(queries)
        self._drained.clear()
        with self._cond:
            self._jobs.append(job)
            self._queued_queries += len(queries)
            self._cond.notify()
        return future

    def lone(self, num_queries: int, source: object) -> bool:
        """Whether a request may compute on the event-loop thread (:meth:`run_inline`) instead of a worker:
        nothing is queued or computing, it holds at most ``inline_max_queries`` queries, and the request before it
        came from the same connection (``source``; None, unknown, never qualifies) and also found nothing queued
        or computing. So a second client's request, read after the lone one finished, goes to a worker, and so
        does everything that arrives while it computes; after any overlap a connection needs two requests in a
        row into an empty server before it computes inline again. Event-loop thread only."""
        empty = self.pending_requests == 0
        previous, self._last_source = self._last_source, source if empty else None
        return (
            source is not None
            and source == previous
            and num_queries <= self.inline_max_queries
            and empty
            and not self._closing
        )

    def run_inline(self, queries: list[str], topk: int, payload: object = None):
        """Compute one request on the calling thread as a batch of one (blocking the loop for exactly this
        compute: the most a newly arriving request waits); its error propagates to the caller."""
        started = time.perf_counter()
        try:
            return self.process([(queries, topk, payload)])[0]
        except Exception:
            logger.exception("retrieval of a lone request failed")
            raise
        finally:
            self.metrics.record_batch(len(queries), time.perf_counter() - started, inline=True)

    # ---- worker threads -------------------------------------------------------------------------------

    def _startable(self) -> bool:
        """Whether a free worker may start a batch now (under ``_cond``)."""
        if not self._jobs:
            return False
        if self.in_flight == 0:
            return True
        if self.in_flight >= self.num_workers:
            return False
        return (
            self._running_queries < self.parallel_min_queries
            or self._queued_queries >= self.parallel_min_queries
        )

    def _wait_for_company(self) -> bool:
        """With ``max_wait`` set, a worker starting beside a running batch first lets a small queue grow for up
        to ``max_wait`` seconds from its oldest request (under ``_cond``); False when told to stop."""
        while (
            self.max_wait > 0
            and self.in_flight
            and not self._stopping
            and self._jobs
            and self._queued_queries < self.max_batch_queries
        ):
            remaining = self._jobs[0].enqueued + self.max_wait - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        return not self._stopping

    def _take_batch(self) -> tuple[list[_Job], list[_Job]]:
        """Pop the next batch (under ``_cond``): everything queued up to ``max_batch_queries``, or half the queue
        when another worker is idle: a large queue then uses both cores, and two requests that arrive together
        run side by side instead of locking their clients into one merged batch after another. Returns
        ``(batch, dropped)``; dropped jobs were cancelled by their client or waited longer than
        ``max_queue_wait``."""
        limit = self.max_batch_queries
        if self._idle_workers and len(self._jobs) > 1:
            limit = min(limit, (self._queued_queries + 1) // 2)
        batch, dropped, size, now = [], [], 0, time.monotonic()
        while self._jobs and (not batch or size + len(self._jobs[0].queries) <= limit):
            job = self._jobs.popleft()
            self._queued_queries -= len(job.queries)
            if job.future.cancelled() or (self.max_queue_wait and now - job.enqueued > self.max_queue_wait):
                dropped.append(job)
                continue
            batch.append(job)
            size += len(job.queries)
        return batch, dropped

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle_workers += 1
                while not self._stopping and not self._startable():
                    self._cond.wait()
                self._idle_workers -= 1
                if self._stopping or not self._wait_for_company():
                    return
                batch, dropped = self._take_batch()
                if self._jobs:
                    self._cond.notify()  # what is left may be for an idle partner
                size = sum(len(job.queries) for job in batch)
                if batch:
                    self.in_flight += 1
                    self._running_queries += size
            if dropped:
                self._to_loop(self._drop, dropped)
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results, error = self.process([(j.queries, j.topk, j.payload) for j in batch]), None
            except Exception as err:  # reported to each waiting request; the worker keeps serving
                results, error = None, err
            with self._cond:
                self.in_flight -= 1
                self._running_queries -= size
                if self._jobs:
                    self._cond.notify()  # a waiting partner may start now that less computes
            self._to_loop(self._deliver, batch, started, results, error)

    def _to_loop(self, callback, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed after a drain timeout: nobody waits for these answers any more
            logger.warning("event loop closed; %d answers dropped", len(args[0]))

    # ---- event-loop thread ----------------------------------------------------------------------------

    def _forget(self, job: _Job) -> None:
        self.pending_requests -= 1
        self.pending_queries -= len(job.queries)
        if self.pending_requests == 0:
            self._drained.set()

    def _drop(self, jobs: list[_Job]) -> None:
        for job in jobs:
            self._forget(job)
            if not job.future.done():
                job.future.set_exception(Overloaded(f"waited over {self.max_queue_wait:.2f}s in the queue"))

    def _deliver(
        self, batch: list[_Job], started: float, results: list | None, error: BaseException | None
    ) -> None:
        if error is not None:
            logger.error("retrieval batch failed", exc_info=error)
            results = [None] * len(batch)
        self.metrics.record_batch(sum(len(j.queries) for j in batch), time.perf_counter() - started)
        for job, result in zip(batch, results):
            self._forget(job)
            if job.future.done():
                continue
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish the queued requests (up to ``timeout`` seconds), stop the workers."""
        self._closing = True
        if self._drained is not None:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                logger.warning("batcher did not drain within %.0fs; cancelling", timeout)
                with self._cond:
                    jobs, self._jobs = list(self._jobs), deque()
                    self._queued_queries = 0
                for job in jobs:
                    job.future.cancel()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
