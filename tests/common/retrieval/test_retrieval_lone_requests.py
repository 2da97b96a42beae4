"""The lone-request path of the batched server: a request alone on an idle server, from the same connection as the
request before it, computes on the event-loop thread (no queue, future or worker hand-off); anything with company
goes to the workers; answers are byte-identical to the batched and naive paths; errors reach the client; a
second client waits at most one lone compute before its request is read, and from then on both clients compute
side by side on the workers."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx
import pytest
from server_thread import ServerThread
from test_retrieval_batching import Recorder

from rlcore.retrieval import load_retriever
from rlcore.retrieval.batching import MicroBatcher
from rlcore.retrieval.protocol import Limits
from rlcore.retrieval.server import ServerConfig, create_app, main


def test_lone_means_an_empty_batcher_and_a_repeat_connection_that_found_it_empty_too():
    recorder = Recorder()

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1, inline_max_queries=2)
        batcher.start()
        checks = {"first request of a connection": batcher.lone(1, ("c", 1))}
        await batcher.submit(["a"], 3)
        checks["same connection, idle"] = batcher.lone(1, ("c", 1))
        checks["too many queries"] = batcher.lone(3, ("c", 1))
        checks["two queries, within the cap"] = batcher.lone(2, ("c", 1))
        checks["another connection"] = batcher.lone(1, ("d", 2))
        checks["back to the first: the one before was d"] = batcher.lone(1, ("c", 1))
        checks["unknown connection"] = batcher.lone(1, None) or batcher.lone(1, None)
        batcher.lone(1, ("c", 1))
        busy = batcher.submit(["b"], 3)  # queued or computing: nobody is alone any more
        checks["same connection, busy"] = batcher.lone(1, ("c", 1))
        await busy
        checks["idle again, but the request before it had company"] = batcher.lone(1, ("c", 1))
        checks["two in a row into an empty server"] = batcher.lone(1, ("c", 1))
        await batcher.close()
        checks["shutting down"] = batcher.lone(1, ("c", 1))
        return checks

    checks = asyncio.run(run())
    assert checks == {
        "first request of a connection": False,  # no previous request: it cannot know it is alone
        "same connection, idle": True,
        "too many queries": False,  # above inline_max_queries: would block the loop for a big compute
        "two queries, within the cap": True,
        "another connection": False,  # a second client: both go to the workers
        "back to the first: the one before was d": False,
        "unknown connection": False,
        "same connection, busy": False,
        "idle again, but the request before it had company": False,  # overlap (concurrency 2): stay on workers
        "two in a row into an empty server": True,
        "shutting down": False,
    }


def test_run_inline_computes_on_the_calling_thread_and_errors_propagate():
    recorder = Recorder(fail_on="boom")

    async def run():
        batcher = MicroBatcher(recorder, num_workers=1)
        batcher.start()
        result = batcher.run_inline(["alone"], 5)
        with pytest.raises(RuntimeError, match="encoder exploded"):
            batcher.run_inline(["boom"], 5)
        after = await batcher.submit(["next"], 5)  # a failed inline compute leaves the batcher serving
        await batcher.close()
        return result, after, batcher.metrics

    result, after, metrics = asyncio.run(run())
    assert (result, after) == ("5:alone", "5:next")
    assert recorder.batches == [["alone"], ["boom"], ["next"]]
    assert "MainThread" in recorder.threads  # the inline calls ran on the event-loop (here: main) thread
    assert metrics.inline_requests == 2 and metrics.batch_queries.count == 3
    assert "retrieval_inline_requests_total 2" in metrics.render()


class RecordingRetriever:
    """Wraps a retriever: records the thread of each search and how many ran at once, sleeps ``delay`` seconds
    per search, fails a search holding the query ``boom``."""

    def __init__(self, inner, delay: float = 0.0):
        self.inner, self.delay, self.store = inner, delay, inner.store
        self.threads: list[tuple[str, str]] = []  # (the search's queries joined by '+', its thread)
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def __len__(self):
        return len(self.inner)

    def search_rows(self, queries, topk):
        with self.lock:
            self.threads.append(("+".join(queries), threading.current_thread().name))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(self.delay)
            if "boom" in queries:
                raise RuntimeError("encoder exploded")
            return self.inner.search_rows(queries, topk)
        finally:
            with self.lock:
                self.running -= 1


def _config(**kwargs) -> ServerConfig:
    return ServerConfig(limits=Limits(max_queries=8, max_topk=20, max_query_chars=200), **kwargs)


def _inline_count(url: str) -> int:
    text = httpx.get(f"{url}/metrics").text
    return int(re.search(r"^retrieval_inline_requests_total (\d+)$", text, re.M).group(1))


@pytest.fixture(scope="module")
def retriever(hash_index):
    return load_retriever(hash_index, kind="flat")


def test_a_keep_alive_client_alone_takes_the_lone_path_with_identical_answers(retriever):
    payloads = [
        {"queries": [q], "topk": k, "return_scores": s}
        for q, k, s in [("acid", 3, True), ("Athens history", 5, False), ("algebra", 1, True)]
    ]
    # two queries: over the default cap of one, so never on the lone path
    payloads.append({"queries": ["atom", "Alps"], "topk": 4, "return_scores": True})
    recording = RecordingRetriever(retriever)
    answers = {}
    for name, config in {
        "batched": _config(),
        "workers only": _config(inline_max_queries=0),
        "naive": _config(mode="naive"),
    }.items():
        with ServerThread(create_app(config, retriever=recording)) as server, httpx.Client() as client:
            answers[name] = [client.post(f"{server.url}/retrieve", json=p).content for p in payloads * 2]
            if name == "batched":
                inline = _inline_count(server.url)
                threads = list(recording.threads)
        recording.threads.clear()
    assert answers["batched"] == answers["workers only"] == answers["naive"]
    # one keep-alive connection: the first request goes to a worker (no request before it on this connection),
    # the next single-query ones compute inline, the two-query ones always go to a worker
    assert inline == 5
    on_workers = [name.startswith("retrieval-batch") for _, name in threads]
    assert on_workers == [True, False, False, True, False, False, False, True]


def test_an_error_on_the_lone_path_is_a_500_and_the_connection_keeps_serving(retriever):
    with ServerThread(create_app(_config(), retriever=RecordingRetriever(retriever))) as server:
        with httpx.Client() as client:
            assert client.post(f"{server.url}/retrieve", json={"queries": ["acid"]}).status_code == 200
            failed = client.post(f"{server.url}/retrieve", json={"queries": ["boom"]})
            after = client.post(f"{server.url}/retrieve", json={"queries": ["acid"]})
        assert _inline_count(server.url) == 2  # the failing request and the one after it took the lone path
    assert failed.status_code == 500 and failed.json() == {"error": "internal error: RuntimeError"}
    assert after.status_code == 200


def test_a_second_client_waits_at_most_one_lone_compute_then_both_run_on_the_workers(retriever):
    """Client A sends request after request on one connection; B starts while A's requests compute inline. B's
    first request arrives during one of A's lone computes, so the loop reads it at most one compute (0.5 s)
    later; it then goes to a worker, A's next request goes to a worker beside it, and they compute side by side.
    Bound on B's first request: one lone compute of A's + its own compute + HTTP, well under 3 computes (if the
    loop ran both clients' requests inline one after the other, as a lone path without the connection rule does,
    they would never overlap)."""
    delay = 0.5
    recording = RecordingRetriever(retriever, delay)
    with ServerThread(create_app(_config(), retriever=recording)) as server:
        b_latencies: list[float] = []
        stop = threading.Event()

        def client_a():
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    answer = client.post(f"{server.url}/retrieve", json={"queries": ["acid"]})
                    assert answer.status_code == 200

        a = threading.Thread(target=client_a)
        a.start()
        deadline = time.monotonic() + 30
        while _inline_count(server.url) < 1:  # A's second request is computing inline, or done
            assert time.monotonic() < deadline, "client A never took the lone path"
            time.sleep(0.02)
        inline_before_b = _inline_count(server.url)
        with httpx.Client(timeout=30) as client:
            for _ in range(3):
                started = time.perf_counter()
                assert client.post(f"{server.url}/retrieve", json={"queries": ["Athens"]}).status_code == 200
                b_latencies.append(time.perf_counter() - started)
        stop.set()
        a.join(timeout=30)
        inline_during_b = _inline_count(server.url) - inline_before_b
    b_threads = [name for queries, name in recording.threads if queries == "Athens"]
    assert b_latencies[0] < 3 * delay, b_latencies
    assert recording.most_running == 2  # A and B computed side by side
    assert len(b_threads) == 3 and all(name.startswith("retrieval-batch") for name in b_threads), b_threads
    # at most the compute B's first request arrived during, and one more when B's requests left A alone again
    assert inline_during_b <= 3, inline_during_b


@pytest.mark.parametrize(
    ("option", "value", "floor"),
    [
        ("--inline-max-queries", "-1", 0),
        ("--batch-workers", "0", 1),
        ("--max-wait-ms", "-5", 0),
        ("--nprobe", "0", 1),
    ],
)
def test_the_server_command_refuses_values_below_an_options_floor(option, value, floor, tmp_path, capsys):
    """A negative --inline-max-queries used to act as 0 (off) without a word; every numeric option now names its
    floor and the value given, before anything loads."""

    with pytest.raises(SystemExit) as stop:
        main(["--index", str(tmp_path / "absent"), option, value])
    assert stop.value.code == 2
    assert f"{option} must be at least {floor}, got {value}" in capsys.readouterr().err
