"""MicroBatcher scheduling: a lone request never waits and the event loop stays free while it computes, two
lone requests run side by side on the two workers, arrivals during a batch merge into one batch, a second batch
starts beside a big one only once enough is queued, a large queue is split between idle workers, failures reach
every waiting request, and close() drains the queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rlcore.retrieval.batching import MicroBatcher, Overloaded


class Recorder:
    """``process`` stand-in: records each batch's queries, its thread and how many batches ran at once; sleeps
    ``delay`` seconds."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.batches.append([q for queries, _, _ in batch for q in queries])
            self.threads.add(threading.current_thread().name)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        if self.fail_on is not None and self.fail_on in self.batches[-1]:
            raise RuntimeError("encoder exploded")
        return [f"{topk}:{'+'.join(queries)}" for queries, topk, _ in batch]


def test_lone_request_on_idle_server_does_not_wait_for_company():
    async def run():
        # max_wait is huge: if an idle batcher waited for company the request would take 2 s
        batcher = MicroBatcher(Recorder(), max_wait=2.0, num_workers=1)
        batcher.start()
        started = time.perf_counter()
        result = await batcher.submit(["alone"], 3)
        elapsed = time.perf_counter() - started
        await batcher.close()
        return result, elapsed

    result, elapsed = asyncio.run(run())
    assert result == "3:alone"
    assert elapsed < 1.0


def test_a_lone_request_computes_on_a_worker_and_the_event_loop_stays_free():
    recorder = Recorder(delay=0.3)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1)
        batcher.start()
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        result = await batcher.submit(["alone"], 3)
        ticker.cancel()
        await batcher.close()
        return result, ticks

    result, ticks = asyncio.run(run())
    assert result == "3:alone"
    # the loop ran its 10 ms ticker while the 0.3 s batch computed (about 30 ticks; 0 if the loop had blocked)
    assert ticks >= 10
    assert recorder.threads and all(name.startswith("retrieval-batch") for name in recorder.threads)


def test_two_lone_requests_run_side_by_side_on_two_workers():
    """Concurrency 2: the second request does not queue behind the first (a batch of 1 is below
    parallel_min_queries), so both take one batch time, not two."""
    recorder = Recorder(delay=0.3)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=2, parallel_min_queries=8)
        batcher.start()
        started = time.perf_counter()
        first = batcher.submit(["a"], 3)
        await asyncio.sleep(0.05)  # the first is computing by now
        second = batcher.submit(["b"], 3)
        results = await asyncio.gather(first, second)
        elapsed = time.perf_counter() - started
        await batcher.close()
        return results, elapsed

    results, elapsed = asyncio.run(run())
    assert results == ["3:a", "3:b"]
    assert recorder.batches == [["a"], ["b"]] and recorder.most_running == 2
    assert elapsed < 0.55  # side by side: 0.05 + 0.3; one after the other would be at least 0.6


def test_two_requests_arriving_together_on_idle_workers_run_side_by_side():
    """Concurrency 2 in lockstep: both answers go out together, both next requests arrive together. Merged into
    one batch they would stay merged (one core, 1.4x the time of one query); split, each worker takes one."""
    recorder = Recorder(delay=0.2)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=2, parallel_min_queries=8)
        batcher.start()
        await asyncio.sleep(0.05)  # both workers are waiting
        with batcher._cond:  # both requests queued before either worker looks
            futures = [batcher.submit([f"q{i}"], 3) for i in range(2)]
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results

    assert asyncio.run(run()) == ["3:q0", "3:q1"]
    assert sorted(recorder.batches) == [["q0"], ["q1"]] and recorder.most_running == 2


def test_beside_a_big_batch_a_second_starts_only_once_enough_is_queued():
    recorder = Recorder(delay=0.4)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=2, parallel_min_queries=4)
        batcher.start()
        big = batcher.submit(["b0", "b1", "b2", "b3"], 3)  # 4 queries running: not below 4
        await asyncio.sleep(0.05)
        few = [batcher.submit([f"s{i}"], 3) for i in range(2)]  # 2 queued: below 4, they wait for company
        await asyncio.sleep(0.1)
        waited = batcher.in_flight
        more = [batcher.submit([f"t{i}"], 3) for i in range(2)]  # 4 queued: the second worker starts
        results = await asyncio.gather(big, *few, *more)
        await batcher.close()
        return waited, results

    waited, results = asyncio.run(run())
    assert waited == 1
    assert results == ["3:b0+b1+b2+b3", "3:s0", "3:s1", "3:t0", "3:t1"]
    assert recorder.batches == [["b0", "b1", "b2", "b3"], ["s0", "s1", "t0", "t1"]]
    assert recorder.most_running == 2


def test_a_large_queue_is_split_between_idle_workers():
    recorder = Recorder(delay=0.1)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=2, parallel_min_queries=4)
        batcher.start()
        await asyncio.sleep(0.05)  # both workers are waiting
        with batcher._cond:  # the 8 requests land in the queue at once, as a burst read in one loop turn
            futures = [batcher.submit([f"q{i}", f"r{i}"], 1) for i in range(8)]
        await asyncio.gather(*futures)
        await batcher.close()

    asyncio.run(run())
    # 16 queries and an idle partner: the first worker takes half, the second the other half, side by side
    assert sorted(len(batch) for batch in recorder.batches) == [8, 8]
    assert recorder.most_running == 2 and len(recorder.threads) == 2


def test_arrivals_during_a_batch_form_the_next_batch():
    recorder = Recorder(delay=0.2)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1)
        batcher.start()
        first = batcher.submit(["a"], 3)  # starts at once, alone
        await asyncio.sleep(0.05)  # the worker is busy for 0.2 s
        rest = [batcher.submit([f"q{i}"], 3 if i < 3 else 5) for i in range(5)]
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results, batcher

    results, batcher = asyncio.run(run())
    # each request gets its own answer, in order; the five late arrivals shared one process() call
    assert results == ["3:a", "3:q0", "3:q1", "3:q2", "5:q3", "5:q4"]
    assert recorder.batches == [["a"], ["q0", "q1", "q2", "q3", "q4"]]
    assert recorder.threads and all(name.startswith("retrieval-batch") for name in recorder.threads)
    assert batcher.pending_requests == 0 and batcher.pending_queries == 0 and batcher.in_flight == 0


def test_batches_respect_max_batch_queries_and_worker_count():
    recorder = Recorder(delay=0.05)

    async def run():
        batcher = MicroBatcher(recorder, max_batch_queries=4, num_workers=2)
        batcher.start()
        futures = [batcher.submit([f"q{i}", f"r{i}"], 1) for i in range(6)]  # 12 queries, 2 per request
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results

    assert asyncio.run(run()) == [f"1:q{i}+r{i}" for i in range(6)]
    assert all(len(batch) <= 4 for batch in recorder.batches)
    assert sorted(q for batch in recorder.batches for q in batch) == sorted(
        [f"q{i}" for i in range(6)] + [f"r{i}" for i in range(6)]
    )
    assert recorder.most_running <= 2 and len(recorder.threads) <= 2


def test_a_failed_batch_fails_its_requests_and_the_next_batch_still_runs():
    recorder = Recorder(delay=0.1, fail_on="boom")

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1)
        batcher.start()
        bad = batcher.submit(["boom"], 1)
        await asyncio.sleep(0.02)
        good = batcher.submit(["fine"], 1)
        outcomes = await asyncio.gather(bad, good, return_exceptions=True)
        await batcher.close()
        return outcomes

    bad, good = asyncio.run(run())
    assert isinstance(bad, RuntimeError) and "encoder exploded" in str(bad)
    assert good == "1:fine"


def test_queue_bound_and_shutdown_refuse_new_work():
    async def run():
        batcher = MicroBatcher(Recorder(delay=0.1), max_queue_queries=3, num_workers=1)
        batcher.start()
        accepted = [batcher.submit(["a", "b"], 1)]
        with pytest.raises(Overloaded, match="2 queries queued \\(limit 3\\)"):
            batcher.submit(["c", "d"], 1)
        accepted.append(batcher.submit(["c"], 1))
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="shutting down"):
            batcher.submit(["late"], 1)
        await closing  # close() waits for both accepted requests
        assert all(f.done() and not f.exception() for f in accepted)

    asyncio.run(run())
