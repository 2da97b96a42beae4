"""The retrieval clients ride through a server outage: capped exponential backoff for up to ``max_outage_s``,
one log line when the outage starts, one per minute while it lasts, one when it ends; 4xx fails at once."""

import asyncio
import logging
import threading
import time

import httpx
import pytest
from faults_helpers import ServerProcess, build_small_index, free_port

from rlcore.outage import OutageLog
from rlcore.retrieval import (
    AsyncRetrievalClient,
    RetrievalClient,
    RetrievalServerError,
    RetrievalUnavailableError,
)

OK_BODY = {"result": [[{"document": {"id": "1", "contents": "T\nx"}, "score": 0.5}]]}


def _outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rlcore.retrieval.client"]


def test_outage_logs_start_once_a_minute_and_end(caplog):
    now = [100.0]
    outage = OutageLog(
        "retrieval server",
        "http://x",
        600,
        logging.getLogger("rlcore.retrieval.client"),
        clock=lambda: now[0],
    )
    caplog.set_level(logging.WARNING, logger="rlcore.retrieval.client")
    # failures at t = 0, 30, 59.9 (one line: the start), 61 (a minute since the start line), 100, 121.5 (the
    # second minute line, 60.5 s after the first), then the server answers at t = 130
    for offset in (0, 30, 59.9, 61, 100, 121.5):
        now[0] = 100.0 + offset
        assert outage.failed("ConnectError") == pytest.approx(offset)
    now[0] = 230.0
    outage.recovered()
    outage.recovered()  # a second success logs nothing: the outage is over
    lines = _outage_lines(caplog)
    assert len(lines) == 4, lines
    assert "unavailable (ConnectError); retrying for up to 600s" in lines[0]
    assert "still unavailable after 61s of 600s (4 failed attempts" in lines[1]
    assert "still unavailable after 122s of 600s (6 failed attempts" in lines[2]
    assert "answering again after 130.0s (6 failed attempts)" in lines[3]


def test_budget_spent_then_unavailable_error_naming_the_budget():
    port = free_port()  # nobody listens: connection refused at once, every attempt
    client = RetrievalClient(
        f"http://127.0.0.1:{port}", max_outage_s=1.0, backoff_base=0.02, backoff_max=0.1, timeout=2
    )
    started = time.monotonic()
    with pytest.raises(RetrievalUnavailableError, match=r"max_outage_s=1s.*make serve-retriever") as info:
        client.search(["q"], 1)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 4.0, waited  # it waited out the budget, and no longer than one capped delay more
    attempts = int(str(info.value).split("after ")[1].split(" attempt")[0])
    assert attempts > 5  # it kept trying through the outage, not a fixed handful of times


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_4xx_fails_at_once_even_with_a_long_budget(status):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, json={"error": "bad request"})

    client = RetrievalClient("http://fake", transport=httpx.MockTransport(handler), max_outage_s=600)
    started = time.monotonic()
    with pytest.raises(RetrievalServerError, match=f"answered {status}") as info:
        client.search(["q"], 1)
    assert info.value.status == status and len(calls) == 1 and time.monotonic() - started < 1.0


def test_502_503_504_and_refused_connections_are_ridden_through(caplog):
    script = [502, 503, 504, "refused", 200]
    calls = []

    def handler(request):
        calls.append(request)
        step = script[min(len(calls) - 1, len(script) - 1)]
        if step == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(step, json=OK_BODY if step == 200 else {"error": "down"})

    caplog.set_level(logging.WARNING, logger="rlcore.retrieval.client")
    client = RetrievalClient(
        "http://fake", transport=httpx.MockTransport(handler), backoff_base=0.001, max_outage_s=60, seed=0
    )
    assert client.search(["q"], 1)[0][0].score == 0.5 and len(calls) == 5
    lines = _outage_lines(caplog)
    assert (
        len(lines) == 2
        and "HTTP 502" in lines[0]
        and "answering again" in lines[1]
        and "4 failed" in lines[1]
    )


def test_max_retries_still_caps_attempts_when_given():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503, json={"error": "down"})

    client = RetrievalClient(
        "http://fake", transport=httpx.MockTransport(handler), max_retries=2, backoff_base=0.001
    )
    with pytest.raises(RetrievalUnavailableError, match="after 3 attempt"):
        client.search(["q"], 1)
    assert len(calls) == 3


def test_negative_budget_is_rejected():
    with pytest.raises(ValueError, match="max_outage_s must be >= 0"):
        RetrievalClient("http://fake", max_outage_s=-1)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build_small_index(tmp_path_factory.mktemp("outage-index"))


def _restart_after(server: ServerProcess, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), server.start(wait=False)), daemon=True)
    thread.start()
    return thread


def _check_outage_lines(caplog) -> None:
    lines = _outage_lines(caplog)
    assert sum("unavailable (" in line for line in lines) == 1, lines
    assert sum("answering again" in line for line in lines) == 1, lines


def _ids(hits):
    return [[(p.id, p.score) for p in h] for h in hits]


QUERIES = [f"item number {i}" for i in range(6)]


def test_real_server_killed_and_restarted_mid_run_sync(index, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="rlcore.retrieval.client")
    with ServerProcess(index, log=tmp_path / "server.log") as server:
        client = RetrievalClient(server.url, max_outage_s=120, backoff_max=0.5)
        before = client.search(QUERIES, 3)
        server.kill()
        restart = _restart_after(server, 2.0)
        started = time.monotonic()
        during = client.search(QUERIES, 3)  # issued while the server is down: waits, then gets its answer
        assert time.monotonic() - started >= 2.0
        restart.join()
        assert _ids(during) == _ids(before)
    _check_outage_lines(caplog)


def test_real_server_killed_and_restarted_mid_run_async(index, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="rlcore.retrieval.client")
    with ServerProcess(index, log=tmp_path / "server.log") as server:

        async def scenario():
            async with AsyncRetrievalClient(
                server.url, max_outage_s=120, backoff_max=0.5, batch_size=2
            ) as client:
                before = await client.search(QUERIES, 3)
                server.kill()
                restart = _restart_after(server, 2.0)
                started = time.monotonic()
                during = await client.search(QUERIES, 3)  # three concurrent requests, one shared outage
                waited = time.monotonic() - started
                restart.join()
                return before, during, waited

        before, during, waited = asyncio.run(scenario())
        assert waited >= 2.0 and _ids(during) == _ids(before)
    _check_outage_lines(caplog)
