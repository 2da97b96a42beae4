"""MicroBatcher scheduling: a lone request never waits and runs on the event-loop thread, requests of one loop
turn and arrivals during a batch merge into one worker batch, failures reach every waiting request, and close()
drains the queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rlcore.retrieval.batching import MicroBatcher, Overloaded


class Recorder:
    """``process`` stand-in: records each batch's queries and its thread, sleeps ``delay`` seconds."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def __call__(self, batch):
        self.batches.append([q for queries, _, _ in batch for q in queries])
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
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


def test_lone_request_on_idle_server_runs_on_the_event_loop_thread():
    """No thread hand-off for a request that is alone: it runs where the event loop runs, unless disabled."""
    threads = {}
    for inline in (True, False):
        recorder = Recorder()

        async def run(recorder=recorder, inline=inline):
            batcher = MicroBatcher(recorder, num_workers=1, inline_when_idle=inline)
            batcher.start()
            first = await batcher.submit(["alone"], 3)
            second = await batcher.submit(["again"], 2)  # idle again once the first has answered
            await batcher.close()
            return [first, second], batcher

        results, batcher = asyncio.run(run())
        assert results == ["3:alone", "2:again"]
        assert batcher.in_flight == 0 and batcher.pending_requests == 0
        threads[inline] = recorder.threads
    assert threads[True] == {threading.current_thread().name}  # asyncio.run's loop runs in this thread
    assert len(threads[False]) == 1 and next(iter(threads[False])).startswith("retrieval-batch")


def test_requests_of_one_loop_turn_on_an_idle_server_share_one_worker_batch():
    recorder = Recorder(delay=0.05)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1)
        batcher.start()
        futures = [batcher.submit([f"q{i}"], 3) for i in range(3)]  # as when 3 sockets are read in one turn
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results

    assert asyncio.run(run()) == ["3:q0", "3:q1", "3:q2"]
    assert recorder.batches == [["q0", "q1", "q2"]]
    assert all(name.startswith("retrieval-batch") for name in recorder.threads)


def test_arrivals_during_a_batch_form_the_next_batch():
    recorder = Recorder(delay=0.2)

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1, inline_when_idle=False)
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
        await asyncio.sleep(0)  # one loop turn: the idle batcher looks at the queue
        assert batcher.in_flight == 2  # two workers started at once, 4 queries each; the rest waits
        await asyncio.gather(*futures)
        await batcher.close()

    asyncio.run(run())
    assert all(len(batch) <= 4 for batch in recorder.batches)
    assert sorted(q for batch in recorder.batches for q in batch) == sorted(
        [f"q{i}" for i in range(6)] + [f"r{i}" for i in range(6)]
    )
    assert recorder.batches[0] == ["q0", "r0", "q1", "r1"]


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
