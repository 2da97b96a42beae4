"""Dynamic micro-batching and Prometheus metrics for the retrieval server.

Requests land in one in-memory queue (a deque owned by the event loop). Whenever one of ``num_workers``
worker threads is free, every queued request (up to ``max_batch_queries`` queries) becomes one batch: one
encode + one index search per distinct ``topk``, off the event loop. A request that reaches an idle server
is looked at one event-loop turn later (so requests read in the same turn still merge); if it is then still
alone and no batch computes, it runs right there on the event-loop thread (``inline_when_idle``): no thread
hand-off, no wake-up of a sleeping worker, which is what a lone request pays in a thread-pool server. Under
load, requests that arrive while the workers compute form the next batch, so batch size follows load and
nobody waits on a timer. The next batch starts from the finishing batch's
completion callback, before that batch's answers are written, so one worker (the default ``num_workers``)
already keeps the encoder busy while the event loop does the network I/O; more workers split concurrent
requests into smaller batches (measured: mean batch 3 instead of 16 at 32 clients, and lower throughput). ``max_wait`` (default 0) lets a
free worker wait that long for company while another batch computes. ``max_queue_queries`` bounds queued
plus in-flight queries; beyond it ``submit`` raises :class:`Overloaded` and the server answers 503.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    queue_depth: Callable[[], tuple[int, int]] = lambda: (0, 0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_request(self, status: int, seconds: float, num_queries: int = 0) -> None:
        with self.lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.queries += num_queries
            self.latency.observe(seconds)

    def record_batch(self, num_queries: int, seconds: float) -> None:
        with self.lock:
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
    """Merge concurrent requests into one call of ``process(batch) -> list[result]`` in a worker thread.

    ``process`` receives ``[(queries, topk, payload), ...]`` and returns one result per entry. Dispatch is
    event-driven, with no scheduler task in between: a finishing batch starts the next one from its completion
    callback, so queued work never waits for an extra event-loop turn. A request on an idle server is looked at
    one loop turn after ``submit``; still alone, it runs on the event-loop thread with no hand-off at all (less
    than a thread-pool server, the naive mode, pays), with company it goes to a worker as one batch.
    """

    def __init__(
        self,
        process: Callable[[list[tuple[list[str], int, object]]], list],
        max_batch_queries: int = 256,
        max_wait: float = 0.0,
        max_queue_queries: int = 4096,
        metrics: Metrics | None = None,
        num_workers: int = 1,
        max_queue_wait: float = 0.0,
        inline_when_idle: bool = True,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.process = process
        self.max_batch_queries, self.max_wait, self.max_queue_queries = (
            max_batch_queries,
            max_wait,
            max_queue_queries,
        )
        self.metrics = metrics or Metrics()
        self.metrics.queue_depth = lambda: (self.pending_requests, self.pending_queries)
        self._jobs: deque[_Job] = deque()
        self.num_workers = num_workers
        self.max_queue_wait = max_queue_wait  # seconds a request may wait before it is shed (0: no limit)
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="retrieval-batch")
        self.pending_requests = self.pending_queries = 0
        self.in_flight = 0  # batches being computed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None
        self._closing = False
        self.inline_when_idle = inline_when_idle  # a lone request on an idle batcher runs on the loop thread
        self._idle_check: asyncio.Handle | None = None  # the pending look at a request that found us idle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._drained.set()

    def submit(self, queries: list[str], topk: int, payload: object = None) -> asyncio.Future:
        """Queue a request; raises :class:`Overloaded` when it would exceed ``max_queue_queries``."""
        if self._closing:
            raise Overloaded("server is shutting down")
        if self.pending_queries and self.pending_queries + len(queries) > self.max_queue_queries:
            raise Overloaded(f"{self.pending_queries} queries queued (limit {self.max_queue_queries})")
        future = self._loop.create_future()
        self._jobs.append(_Job(queries, topk, payload, future, time.monotonic()))
        self.pending_requests += 1
        self.pending_queries += len(queries)
        self._drained.clear()
        if self.in_flight == 0 and self.inline_when_idle:
            # idle: decide one loop turn later, once every request read in this turn has been submitted
            if self._idle_check is None:
                self._idle_check = self._loop.call_soon(self._start_idle)
        elif self.in_flight == 0 or self.max_wait <= 0:
            self._pump()  # idle server: no waiting for company that is not coming
        elif self._timer is None and self.in_flight < self.num_workers:
            # a worker is free while another batch computes: give concurrent arrivals ``max_wait`` to join
            self._timer = self._loop.call_later(self.max_wait, self._pump)
        return future

    def _take_batch(self) -> list[_Job]:
        batch, size = [], 0
        while self._jobs and (not batch or size + len(self._jobs[0].queries) <= self.max_batch_queries):
            job = self._jobs.popleft()
            if job.future.cancelled():  # client went away before we started
                self._forget(job)
                continue
            if self.max_queue_wait and time.monotonic() - job.enqueued > self.max_queue_wait:
                self._forget(job)
                job.future.set_exception(Overloaded(f"waited over {self.max_queue_wait:.2f}s in the queue"))
                continue
            batch.append(job)
            size += len(job.queries)
        return batch

    def _forget(self, job: _Job) -> None:
        self.pending_requests -= 1
        self.pending_queries -= len(job.queries)
        if self.pending_requests == 0:
            self._drained.set()

    def _start_idle(self) -> None:
        """A request found the batcher idle: alone, it runs here on the event-loop thread (its encode + search
        is all the work there is, so blocking the loop for it delays nobody); with company, the usual batch."""
        self._idle_check = None
        if self.in_flight or len(self._jobs) != 1:
            self._pump()
            return
        batch = self._take_batch()
        if not batch:
            return
        self.in_flight += 1
        started = time.perf_counter()
        try:
            results, error = self.process([(j.queries, j.topk, j.payload) for j in batch]), None
        except Exception as err:  # reported to the request, as for a batch on a worker
            results, error = None, err
        self.in_flight -= 1
        self._deliver(batch, started, results, error)
        self._pump()  # requests submitted by callbacks during the run (none from the network: the loop was busy)

    def _pump(self) -> None:
        """Start batches while workers are free and requests are queued (event-loop thread only)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._jobs and self.in_flight < self.num_workers:
            batch = self._take_batch()
            if not batch:
                continue
            self.in_flight += 1
            started = time.perf_counter()
            work = self._loop.run_in_executor(
                self._executor, self.process, [(j.queries, j.topk, j.payload) for j in batch]
            )
            work.add_done_callback(
                lambda done, batch=batch, started=started: self._finish(batch, started, done)
            )

    def _finish(self, batch: list[_Job], started: float, done: asyncio.Future) -> None:
        self.in_flight -= 1
        self._pump()  # the next batch starts before this one's answers are handed out
        error = done.exception()
        self._deliver(batch, started, None if error is not None else done.result(), error)

    def _deliver(
        self, batch: list[_Job], started: float, results: list | None, error: BaseException | None
    ) -> None:
        if error is not None:  # reported to each waiting request; the batcher keeps serving
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
            if self._idle_check is not None:
                self._idle_check.cancel()
                self._idle_check = None
            if self._jobs:
                self._pump()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                logger.warning("batcher did not drain within %.0fs; cancelling", timeout)
                for job in self._jobs:
                    job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
