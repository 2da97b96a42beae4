"""Dynamic micro-batching and Prometheus metrics for the retrieval server.

Requests land in one in-memory queue (a deque guarded by the event loop). A single batcher task takes every
queued request (up to ``max_batch_queries`` queries), waits ``max_wait`` seconds first only when it was
idle (so a lone request is not held back under load), and runs one encode + one index search per distinct
``topk`` in a worker thread, off the event loop. ``num_workers`` batches may be in flight at once (default
2: while one batch computes, the previous one's answers are written and the next one forms, so the
compute never waits for network I/O, which matters in closed loops where every client is in the batch).
While the workers are busy, new requests queue up and form the next batch, so batch size adapts to load. ``max_queue_queries`` bounds queued plus
in-flight queries; beyond it ``submit`` raises :class:`Overloaded` and the server answers 503.
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

    ``process`` receives ``[(queries, topk, payload), ...]`` and returns one result per entry.
    """

    def __init__(
        self,
        process: Callable[[list[tuple[list[str], int, object]]], list],
        max_batch_queries: int = 256,
        max_wait: float = 0.001,
        max_queue_queries: int = 4096,
        metrics: Metrics | None = None,
        num_workers: int = 2,
        max_queue_wait: float = 0.0,
    ):
        self.process = process
        self.max_batch_queries, self.max_wait, self.max_queue_queries = (
            max_batch_queries,
            max_wait,
            max_queue_queries,
        )
        self.metrics = metrics or Metrics()
        self.metrics.queue_depth = lambda: (self.pending_requests, self.pending_queries)
        self._jobs: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.num_workers = num_workers
        self.max_queue_wait = max_queue_wait  # seconds a request may wait before it is shed (0: no limit)
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="retrieval-batch")
        self.pending_requests = self.pending_queries = 0
        self._closing = False

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retrieval-batcher")

    def submit(self, queries: list[str], topk: int, payload: object = None) -> asyncio.Future:
        """Queue a request; raises :class:`Overloaded` when it would exceed ``max_queue_queries``."""
        if self._closing:
            raise Overloaded("server is shutting down")
        if self.pending_queries and self.pending_queries + len(queries) > self.max_queue_queries:
            raise Overloaded(f"{self.pending_queries} queries queued (limit {self.max_queue_queries})")
        future = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(queries, topk, payload, future, time.monotonic()))
        self.pending_requests += 1
        self.pending_queries += len(queries)
        self._wakeup.set()
        return future

    def _take_batch(self) -> list[_Job]:
        batch, size = [], 0
        while self._jobs and (not batch or size + len(self._jobs[0].queries) <= self.max_batch_queries):
            job = self._jobs.popleft()
            if job.future.cancelled():  # client went away before we started
                self.pending_requests -= 1
                self.pending_queries -= len(job.queries)
                continue
            if self.max_queue_wait and time.monotonic() - job.enqueued > self.max_queue_wait:
                self.pending_requests -= 1
                self.pending_queries -= len(job.queries)
                job.future.set_exception(Overloaded(f"waited over {self.max_queue_wait:.2f}s in the queue"))
                continue
            batch.append(job)
            size += len(job.queries)
        return batch

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.num_workers)
        running: set[asyncio.Task] = set()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._jobs and self._closing:
                break
            queued = sum(len(j.queries) for j in self._jobs)
            if self._jobs and not running and self.max_wait > 0 and queued < self.max_batch_queries:
                await asyncio.sleep(self.max_wait)  # coming from idle: let concurrent requests join
            while self._jobs:
                await slots.acquire()  # while every worker is busy, arrivals pile up into the next batch
                batch = self._take_batch()
                if not batch:
                    slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._execute(batch, slots))
                running.add(task)
                task.add_done_callback(running.discard)
            if self._closing and not self._jobs:
                break
        await asyncio.gather(*running)

    async def _execute(self, batch: list[_Job], slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self.process, [(j.queries, j.topk, j.payload) for j in batch]
            )
            error = None
        except Exception as err:  # reported to each waiting request, the loop keeps serving
            logger.exception("retrieval batch failed")
            results, error = [None] * len(batch), err
        finally:
            slots.release()
        self.metrics.record_batch(sum(len(j.queries) for j in batch), time.perf_counter() - started)
        for job, result in zip(batch, results):
            self.pending_requests -= 1
            self.pending_queries -= len(job.queries)
            if job.future.done():
                continue
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, finish the queued requests (up to ``timeout`` seconds), stop the worker."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                logger.warning("batcher did not drain within %.0fs; cancelling", timeout)
                self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
