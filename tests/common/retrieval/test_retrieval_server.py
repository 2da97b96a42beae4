"""HTTP contract against a real uvicorn server on a free loopback port, input validation, concurrency,
back-pressure, auth, loading state, and the sync/async clients (retries, batching, unreachable server)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import httpx
import pytest
from server_thread import ServerThread

from rlcore.retrieval import (
    AsyncRetrievalClient,
    RetrievalClient,
    RetrievalServerError,
    RetrievalUnavailableError,
    load_retriever,
)
from rlcore.retrieval.protocol import Limits
from rlcore.retrieval.server import ServerConfig, create_app

LIMITS = Limits(max_queries=8, max_topk=20, max_query_chars=200)
WORDS = ["art", "acid", "Africa", "algebra", "Athens", "atom", "alphabet", "agriculture", "Alps", "anatomy"]


def _config(**kwargs) -> ServerConfig:
    return ServerConfig(limits=LIMITS, max_wait_ms=2.0, **kwargs)


@pytest.fixture(scope="module")
def retriever(hash_index):
    return load_retriever(hash_index, kind="flat")


@pytest.fixture(scope="module")
def server(retriever):
    with ServerThread(create_app(_config(), retriever=retriever)) as running:
        yield running


def test_contract_matches_in_process(server, retriever):
    queries = ["Abstract art", "acid and base"]
    response = httpx.post(
        f"{server.url}/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    result = response.json()["result"]
    expected = retriever.search(queries, 3)
    assert len(result) == 2 and all(len(hits) == 3 for hits in result)
    for hits, passages in zip(result, expected):
        assert [set(h) for h in hits] == [{"document", "score"}] * 3
        assert [h["document"] for h in hits] == [{"id": p.id, "contents": p.contents} for p in passages]
        assert [h["score"] for h in hits] == pytest.approx([p.score for p in passages], abs=1e-6)
    plain = httpx.post(f"{server.url}/retrieve", json={"queries": queries, "topk": 3, "return_scores": False})
    assert [[set(h) for h in hits] for hits in plain.json()["result"]] == [[{"document"}] * 3] * 2
    default = httpx.post(f"{server.url}/retrieve", json={"queries": queries}).json()["result"]
    assert len(default[0]) == 3 and "score" not in default[0][0]  # Search-R1 defaults: topk 3, no scores


def test_health_and_metrics(server):
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["passages"] == 300
    httpx.post(f"{server.url}/retrieve", json={"queries": ["x"]})
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        'retrieval_requests_total{status="200"}',
        "retrieval_request_latency_seconds_bucket",
        "retrieval_batch_queries_bucket",
        "retrieval_queue_queries",
        "retrieval_queries_total",
    ):
        assert name in text


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),  # not UTF-8
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'"queries"', 400, "must be a JSON object"),
        (b"{}", 422, "'queries' is required"),
        (b'{"queries": "one string"}', 422, "must be a list of strings"),
        (b'{"queries": []}', 422, "is empty"),
        (b'{"queries": [""]}', 422, r"queries\[0\] is empty or whitespace"),
        (b'{"queries": ["ok", " \\t\\n"]}', 422, r"queries\[1\] is empty or whitespace"),
        (b'{"queries": ["ok", 5]}', 422, r"queries\[1\] must be a string, got int"),
        (b'{"queries": [null]}', 422, r"queries\[0\] must be a string, got NoneType"),
        (b'{"queries": [["nested"]]}', 422, r"queries\[0\] must be a string, got list"),
        (b'{"queries": ["x"], "topk": 0}', 422, "between 1 and 20"),
        (b'{"queries": ["x"], "topk": -3}', 422, "between 1 and 20"),
        (b'{"queries": ["x"], "topk": 21}', 422, "between 1 and 20"),  # above --max-topk
        (b'{"queries": ["x"], "topk": 2.5}', 422, "'topk' must be an integer"),
        (b'{"queries": ["x"], "topk": "3"}', 422, "'topk' must be an integer"),
        (b'{"queries": ["x"], "topk": true}', 422, "'topk' must be an integer"),  # bool is not an int here
        (b'{"queries": ["x"], "return_scores": "yes"}', 422, "'return_scores' must be true or false"),
        (json.dumps({"queries": ["q"] * 9}).encode(), 413, "9 queries exceed the limit of 8"),
        (json.dumps({"queries": ["a" * 201]}).encode(), 422, "201 characters, over the limit of 200"),
        (b"[" * 5_000, 400, "malformed JSON"),  # nesting deeper than the recursion limit must not crash
        (b"x" * 200_000, 413, "exceeds the limit"),  # body over max_queries * (6 * max_chars + 4) + 4096
    ],
)
def test_bad_inputs_are_4xx_json(server, body, status, message):
    response = httpx.post(
        f"{server.url}/retrieve", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.search(message, response.json()["error"])
    assert httpx.get(f"{server.url}/health").status_code == 200  # still serving


def test_64_concurrent_clients_get_sequential_results(server, retriever):
    requests = [
        ([f"{WORDS[i % 10]} {WORDS[(i * 7) % 10]}", WORDS[(i * 3) % 10]][: 1 + i % 2], 1 + i % 4)
        for i in range(64)
    ]
    sequential = [retriever.search(queries, topk) for queries, topk in requests]
    before = httpx.get(f"{server.url}/metrics").text

    async def run_all():
        clients = [AsyncRetrievalClient(server.url, timeout=60) for _ in range(64)]
        try:
            return await asyncio.gather(*(c.search(q, k) for c, (q, k) in zip(clients, requests)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    concurrent = asyncio.run(run_all())
    assert [[[(p.id, p.contents) for p in hits] for hits in r] for r in concurrent] == [
        [[(p.id, p.contents) for p in hits] for hits in r] for r in sequential
    ]
    for got, want in zip(concurrent, sequential):
        assert [p.score for hits in got for p in hits] == pytest.approx(
            [p.score for hits in want for p in hits], abs=1e-6
        )
    after = httpx.get(f"{server.url}/metrics").text

    def batches(text):
        line = next(x for x in text.splitlines() if x.startswith("retrieval_batch_queries_count"))
        return int(line.split()[-1])

    assert batches(after) - batches(before) < 64  # requests were merged into fewer encode+search calls


def test_naive_mode_answers_identically(retriever, server):
    payload = {"queries": ["acid", "Athens history"], "topk": 4, "return_scores": True}
    with ServerThread(create_app(_config(mode="naive"), retriever=retriever)) as naive:
        assert (
            httpx.post(f"{naive.url}/retrieve", json=payload).content
            == httpx.post(f"{server.url}/retrieve", json=payload).content
        )


class SlowRetriever:
    """Wraps a retriever; every search sleeps ``delay`` seconds (a stand-in for a saturated encoder)."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay, self.store = inner, delay, inner.store

    def __len__(self):
        return len(self.inner)

    def search_rows(self, queries, topk):
        time.sleep(self.delay)
        return self.inner.search_rows(queries, topk)


def test_overload_answers_503_with_retry_after(retriever):
    config = _config(max_queue_queries=4, max_batch_queries=2, retry_after_s=2)
    with ServerThread(create_app(config, retriever=SlowRetriever(retriever, 0.2))) as slow:

        async def burst():
            async with httpx.AsyncClient(timeout=30) as http:
                return await asyncio.gather(
                    *(http.post(f"{slow.url}/retrieve", json={"queries": [f"q {i}"]}) for i in range(20))
                )

        responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 4
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "2" and "overloaded" in rejected.json()["error"]


def test_bearer_token(retriever, monkeypatch):
    monkeypatch.setenv("TEST_RETRIEVER_TOKEN", "s3cret")
    with ServerThread(create_app(_config(token_env="TEST_RETRIEVER_TOKEN"), retriever=retriever)) as secured:
        assert httpx.post(f"{secured.url}/retrieve", json={"queries": ["x"]}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (
            httpx.post(f"{secured.url}/retrieve", json={"queries": ["x"]}, headers=wrong).status_code == 401
        )
        assert httpx.get(f"{secured.url}/metrics").status_code == 401
        assert httpx.get(f"{secured.url}/health").status_code == 200  # probes need no token
        with RetrievalClient(secured.url, token="s3cret") as client:
            assert len(client.search(["acid"], 2)[0]) == 2


def test_health_503_until_index_loaded(hash_index, monkeypatch):
    import rlcore.retrieval.retriever as retriever_module

    release = threading.Event()
    real_load = retriever_module.load_retriever

    def slow_load(*args, **kwargs):
        release.wait(20)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(retriever_module, "load_retriever", slow_load)
    with ServerThread(create_app(_config(index=str(hash_index)))) as loading:
        health = httpx.get(f"{loading.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        early = httpx.post(f"{loading.url}/retrieve", json={"queries": ["x"]})
        assert early.status_code == 503 and "retry-after" in early.headers
        release.set()
        with RetrievalClient(loading.url) as client:
            assert client.wait_until_ready(timeout=20)["passages"] == 300
            assert len(client.search(["acid"], 1)[0]) == 1


def test_broken_index_reported_by_health(tmp_path):
    with ServerThread(create_app(_config(index=str(tmp_path / "missing")))) as broken:
        deadline = time.monotonic() + 10
        while httpx.get(f"{broken.url}/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        body = httpx.get(f"{broken.url}/health").json()
        assert body["status"] == "error" and "does not exist" in body["error"]


def test_sync_and_async_clients_batch_requests(server, retriever):
    queries = [f"{w} topic" for w in WORDS]
    with RetrievalClient(server.url, batch_size=3) as client:  # 10 queries -> 4 requests
        hits = client.search(queries, 2)
    assert [[p.id for p in h] for h in hits] == [[p.id for p in h] for h in retriever.search(queries, 2)]

    async def run():
        async with AsyncRetrievalClient(server.url, batch_size=4, max_concurrency=2) as client:
            return await client.search(queries, 2)

    assert [[p.id for p in h] for h in asyncio.run(run())] == [[p.id for p in h] for h in hits]


def test_client_retries_transient_errors_with_backoff():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) <= 2:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "overloaded"})
        return httpx.Response(
            200, json={"result": [[{"document": {"id": "1", "contents": "T\nx"}, "score": 0.5}]]}
        )

    client = RetrievalClient(
        "http://fake", transport=httpx.MockTransport(handler), backoff_base=0.001, seed=0
    )
    assert client.search(["q"], 1)[0][0].score == 0.5
    assert len(calls) == 3


def test_client_does_not_retry_4xx():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(422, json={"error": "queries[0] is empty or whitespace"})

    client = RetrievalClient("http://fake", transport=httpx.MockTransport(handler))
    with pytest.raises(RetrievalServerError, match="422: queries\\[0\\] is empty") as info:
        client.search([" "], 1)
    assert info.value.status == 422 and len(calls) == 1


def test_client_backoff_delays_are_bounded_and_jittered():
    client = RetrievalClient("http://fake", backoff_base=0.1, backoff_max=1.0, seed=1)
    # attempt i draws from uniform(0, min(1.0, 0.1 * 2**i)): caps 0.1, 0.2, 0.4, 0.8, 1.0, 1.0
    for attempt, cap in enumerate((0.1, 0.2, 0.4, 0.8, 1.0, 1.0)):
        delays = [client._delay(attempt, None) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= cap and len(set(delays)) > 100


def test_unreachable_server_clear_error():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RetrievalClient(f"http://127.0.0.1:{port}", max_retries=2, backoff_base=0.001, timeout=2)
    started = time.monotonic()
    with pytest.raises(
        RetrievalUnavailableError,
        match=rf"127.0.0.1:{port} unavailable after 3 attempt.*make serve-retriever",
    ):
        client.search(["q"], 1)
    assert time.monotonic() - started < 5


def test_graceful_shutdown_finishes_in_flight_requests(retriever):
    app = create_app(_config(max_batch_queries=1), retriever=SlowRetriever(retriever, 0.2))
    running = ServerThread(app)
    running.__enter__()
    results: list[int] = []

    def send(i):
        results.append(
            httpx.post(f"{running.url}/retrieve", json={"queries": [f"q{i}"]}, timeout=30).status_code
        )

    senders = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 30
    while app.state.batcher.pending_requests < 3:  # all three queued or in flight (each batch takes 0.2 s)
        assert time.monotonic() < deadline, "requests never reached the server"
        time.sleep(0.005)
    running.__exit__(None, None, None)  # same path as SIGTERM: stop accepting, drain, exit
    for sender in senders:
        sender.join(timeout=10)
    assert results == [200, 200, 200]
    assert not running.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{running.url}/retrieve", json={"queries": ["late"]}, timeout=2)


def test_requests_queued_too_long_are_shed(retriever):
    config = _config(max_batch_queries=1, batch_workers=1, max_queue_wait_ms=150)
    with ServerThread(create_app(config, retriever=SlowRetriever(retriever, 0.6))) as slow:

        async def burst():
            async with httpx.AsyncClient(timeout=30) as http:
                return await asyncio.gather(
                    *(http.post(f"{slow.url}/retrieve", json={"queries": [f"q {i}"]}) for i in range(4))
                )

        responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    # one worker, one query per batch, 0.6 s per batch: the first request is served, the other three have
    # waited 0.6 s > 0.15 s by the time the worker is free again, so they are shed
    assert codes == [200, 503, 503, 503]
    shed = [r for r in responses if r.status_code == 503]
    assert all("waited over 0.15s in the queue" in r.json()["error"] for r in shed)
