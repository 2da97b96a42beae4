"""The OpenAI-compatible backend against a real local HTTP server (tests/anessuite/openai_stub.py): endpoint errors
stop the run with the server's message and cache nothing; outages are ridden out up to a budget; a killed server
leaves exactly the missing items for the re-run; reasoning models; the served model's cache fingerprint."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from openai_stub import StubOpenAI, free_port

from anessuite.backends.openai_compat import EndpointError, OpenAIChatBackend, ServerUnavailableError
from anessuite.evaluate import EvalConfig, run_eval
from rlcore.tracking_store import MLflowConfig

FIXTURE = Path(__file__).parent / "fixtures" / "anesbench_2026"


def _cfg(tmp_path, url, model="stub-model", **backend):
    cfg = EvalConfig(
        model=model,
        benchmark=str(FIXTURE),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        bootstrap_iters=10,
        tracking=MLflowConfig(enabled=False),
    )
    cfg.backend.kind = "openai"
    cfg.backend.base_url = url
    cfg.backend.backoff_s = 0.01
    cfg.backend.max_backoff_s = 0.05
    for key, value in backend.items():
        setattr(cfg.backend, key, value)
    return cfg


def _cached_lines(tmp_path) -> int:
    files = list((tmp_path / "cache").glob("*.jsonl")) if (tmp_path / "cache").exists() else []
    return sum(len(f.read_text().splitlines()) for f in files)


def test_wrong_model_name_fails_fast_with_nothing_cached(tmp_path):
    with StubOpenAI(models=["Qwen2.5-7B-Instruct"]) as server:
        with pytest.raises(EndpointError, match=r"does not serve model 'qwen-7b'.*Qwen2.5-7B-Instruct"):
            run_eval(_cfg(tmp_path, server.url, model="qwen-7b"))
        assert server.bodies == []  # not a single question was sent
    assert _cached_lines(tmp_path) == 0 and not list((tmp_path / "cache").glob("*.jsonl"))


def test_bad_api_key_stops_with_the_server_message(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with StubOpenAI(api_key="right") as server:
        with pytest.raises(EndpointError, match="HTTP 401: Incorrect API key provided"):
            run_eval(_cfg(tmp_path, server.url))
    assert _cached_lines(tmp_path) == 0


def test_rejected_request_stops_the_run_is_not_cached_and_rerun_asks_only_for_the_rest(tmp_path):
    # the server refuses one English stem (400): the run stops with the server's own message
    target = json.loads((FIXTURE / "anesbench_en.json").read_text())[5]["question"]
    rejecting = [True]
    with StubOpenAI(
        answer=lambda user: "Answer: B", reject=lambda user: rejecting[0] and target in user
    ) as server:
        cfg = _cfg(tmp_path, server.url, concurrency=1)
        with pytest.raises(
            EndpointError, match="HTTP 400: This model's maximum context length is 2048 tokens"
        ):
            run_eval(cfg)
        cached = _cached_lines(tmp_path)
        assert 0 < cached < 18  # the items answered before it are kept; the rejected one is not cached
        rejecting[0] = False  # e.g. the user raised the server's context length
        before = len(server.bodies)
        results = run_eval(cfg)
        assert len(server.bodies) - before == 18 - cached  # exactly the missing items were asked
    assert results["overall"]["n"] == 18 and _cached_lines(tmp_path) == 18


def test_killed_server_then_rerun_finishes_only_the_missing_items(tmp_path):
    port = free_port()
    server = StubOpenAI(port=port, die_after=7, answer=lambda user: "Answer: A").start()
    cfg = _cfg(tmp_path, server.url, concurrency=4, max_outage_s=1.0)
    with pytest.raises(ServerUnavailableError, match="outage budget"):
        run_eval(cfg)
    server.stop()
    cached = _cached_lines(tmp_path)
    assert 1 <= cached <= 7
    with StubOpenAI(port=port, answer=lambda user: "Answer: A") as restarted:
        results = run_eval(cfg)
        assert len(restarted.bodies) == 18 - cached  # nothing answered twice
    assert results["overall"]["n"] == 18


def test_outage_is_ridden_out_with_start_and_end_log_lines(caplog):
    with StubOpenAI(down_for_s=1.0) as server:
        backend = OpenAIChatBackend(
            server.url, "stub-model", backoff_s=0.05, max_backoff_s=0.2, max_outage_s=30
        )
        with caplog.at_level(logging.WARNING, logger="anessuite.backends.openai_compat"):
            started = time.monotonic()
            results = dict(backend.complete([[{"role": "user", "content": "q"}]] * 3, 16))
        assert time.monotonic() - started >= 0.9 and len(results) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable (HTTP 503: loading model)" in m for m in messages) == 1  # one line at the start
    assert sum("answering again" in m for m in messages) == 1  # one at the end
    assert backend.stats["outage_retries"] >= 2


def test_unreachable_server_stops_after_the_budget():
    backend = OpenAIChatBackend(f"http://127.0.0.1:{free_port()}/v1", "m", backoff_s=0.05, max_outage_s=0.5)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="max_outage_s=0"):
        list(backend.complete([[{"role": "user", "content": "q"}]], 8))
    assert 0.4 <= time.monotonic() - started < 10


def test_reasoning_model_fields_and_cut_thinking(tmp_path):
    cut_stem = json.loads((FIXTURE / "anesbench_zh.json").read_text())[1]["question"]
    with StubOpenAI(
        reasoning=True, answer=lambda user: "答案：B", cut=lambda user: cut_stem in user
    ) as server:
        cfg = _cfg(
            tmp_path,
            server.url,
            extra_body={"top_k": 1},
            chat_template_kwargs={"enable_thinking": True},
            max_tokens_field="max_completion_tokens",
        )
        cfg.languages = ["zh"]
        results = run_eval(cfg)
        body = server.bodies[0]
    assert body["max_completion_tokens"] == 2048 and "max_tokens" not in body
    assert body["top_k"] == 1 and body["chat_template_kwargs"] == {"enable_thinking": True}
    zh = results["by_language"]["zh"]
    assert zh["truncated"] == 1 and zh["n"] == 8  # the cut item is counted as truncated
    responses = [json.loads(line) for line in (tmp_path / "out" / "responses.jsonl").read_text().splitlines()]
    assert all(r["reasoning"] == "Let me think." for r in responses)
    scored = [json.loads(line) for line in (tmp_path / "out" / "scored.jsonl").read_text().splitlines()]
    cut = [s for s in scored if s["truncated"]]
    assert len(cut) == 1 and cut[0]["prediction"] is None  # never scored from half-finished thoughts


def test_served_fingerprint_uses_the_model_list_entry_and_revision(caplog):
    with StubOpenAI(models=["a", "b"]) as server:
        first = OpenAIChatBackend(server.url, "a")
        with caplog.at_level(logging.WARNING):
            fp_a = first.fingerprint()
        fp_b = OpenAIChatBackend(server.url, "b").fingerprint()
        fp_a_rev = OpenAIChatBackend(server.url, "a", revision="2026-03-01").fingerprint()
        assert OpenAIChatBackend(server.url, "a").fingerprint() == fp_a
    assert len({fp_a, fp_b, fp_a_rev}) == 3
    assert any("cannot be fingerprinted" in r.getMessage() for r in caplog.records)


def test_two_requests_never_exceed_concurrency():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def answer(user):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return "Answer: C"

    with StubOpenAI(answer=answer) as server:
        backend = OpenAIChatBackend(server.url, "stub-model", concurrency=3)
        results = dict(backend.complete([[{"role": "user", "content": f"q{i}"}] for i in range(9)], 8))
    assert sorted(results) == list(range(9)) and 2 <= peak[0] <= 3


def test_an_error_record_left_by_an_older_cache_is_asked_again(tmp_path):
    with StubOpenAI(answer=lambda user: "Answer: B") as server:
        cfg = _cfg(tmp_path, server.url)
        run_eval(cfg)
        (cache,) = (tmp_path / "cache").glob("*.jsonl")
        lines = cache.read_text().splitlines()
        first = json.loads(lines[0])  # older versions cached a rejected request as an empty response + error
        lines[0] = json.dumps({**first, "response": "", "error": "HTTP 400: rejected"})
        cache.write_text("\n".join(lines) + "\n")
        before = len(server.bodies)
        results = run_eval(cfg)
        assert len(server.bodies) - before == 1  # only that item
    assert results["overall"]["n"] == 18 and results["request_errors"] == 0
