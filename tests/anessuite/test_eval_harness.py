"""Evaluation harness: OpenAI-compatible backend against a local fake server, resumable cache, model isolation,
in-process HF backend on a tiny random model."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from anessuite.backends import Completion
from anessuite.backends.openai_compat import EndpointError, OpenAIChatBackend, ServerError
from anessuite.cache import ResponseCache
from anessuite.evaluate import EvalConfig, run_eval
from anessuite.mcq import MCQItem
from rlcore.tracking_store import MLflowConfig

OPTIONS = (("A", "alpha"), ("B", "beta"), ("C", "gamma"), ("D", "delta"))


def _items():
    # gold letters: en q0..q3 = A, B, C, D; zh z0, z1 = B, C
    items = [
        MCQItem(
            id=f"q{i}",
            question=f"English question {i}?",
            options=OPTIONS,
            answer="ABCD"[i],
            language="en",
            level=("system1", "system1", "system1.x", "system2")[i],
        )
        for i in range(4)
    ]
    items += [
        MCQItem(
            id=f"z{i}",
            question=f"中文问题{i}？",
            options=OPTIONS,
            answer="BC"[i],
            language="zh",
            level="system1",
        )
        for i in range(2)
    ]
    return items


def _write_bench(path):
    path.write_text(json.dumps([item.to_record() for item in _items()], ensure_ascii=False), encoding="utf-8")
    return path


class FakeServer:
    """OpenAI-style /v1/chat/completions on 127.0.0.1 with scripted failures and an in-flight counter."""

    def __init__(self, answers: dict[str, str], delay_s: float = 0.05):
        self.answers = answers
        self.delay_s = delay_s
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                with server.lock:
                    server.attempts[user] = server.attempts.get(user, 0) + 1
                    attempt = server.attempts[user]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay_s)
                with server.lock:
                    server.in_flight -= 1
                if "TOOLONG" in user:
                    return self._send(400, {"error": "prompt is longer than the context"})
                if "DEAD" in user:
                    return self._send(500, {"error": "internal error"})
                if "FLAKY" in user and attempt == 1:
                    return self._send(503, {"error": "overloaded"})
                letter = next((v for k, v in server.answers.items() if k in user), "A")
                self._send(
                    200,
                    {
                        "choices": [
                            {
                                "message": {"role": "assistant", "content": f"Reasoning.\nAnswer: {letter}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"completion_tokens": 5},
                    },
                )

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _conv(text):
    return [{"role": "user", "content": text}]


def test_openai_backend_concurrency_retries_and_4xx():
    with FakeServer({}) as server:
        backend = OpenAIChatBackend(server.url, "m", concurrency=4, backoff_s=0.01, max_retries=2)
        conversations = [_conv(f"plain {i}") for i in range(8)] + [_conv("FLAKY one")]
        results = dict(backend.complete(conversations, max_new_tokens=16))
        with pytest.raises(EndpointError, match="HTTP 400: prompt is longer than the context"):
            list(backend.complete([_conv("TOOLONG one")], max_new_tokens=16))
        backend.close()
    assert sorted(results) == list(range(9))
    assert results[0].text.endswith("Answer: A") and results[0].num_tokens == 5
    assert 2 <= server.max_in_flight <= 4  # requests overlap, but never more than `concurrency`
    assert server.attempts["FLAKY one"] == 2 and results[8].error is None  # one 503, then success
    assert server.attempts["TOOLONG one"] == 1  # a 400 is final: not retried, and it stops the run


def test_openai_backend_bounded_retries():
    with FakeServer({}, delay_s=0.0) as server:
        backend = OpenAIChatBackend(server.url, "m", concurrency=1, backoff_s=0.001, max_retries=2)
        with pytest.raises(ServerError, match="after 2 retries"):
            list(backend.complete([_conv("DEAD")], max_new_tokens=4))
    assert server.attempts["DEAD"] == 3  # first try + 2 retries, then give up (the official loop never stops)


def test_eval_through_server_end_to_end_and_cached_rerun(tmp_path):
    bench = _write_bench(tmp_path / "bench.json")
    # the server answers correctly on q0, q1, z0 and wrongly on q2, q3, z1 (everything else -> "A")
    answers = {
        "English question 0": "A",
        "English question 1": "B",
        "English question 2": "D",
        "English question 3": "A",
        "中文问题0": "B",
        "中文问题1": "D",
    }
    cfg = EvalConfig(
        model="served-model",
        benchmark=str(bench),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        bootstrap_iters=20,
        tracking=MLflowConfig(enabled=True),
    )
    cfg.backend.kind = "openai"
    cfg.backend.concurrency = 3
    with FakeServer(answers, delay_s=0.0) as server:
        cfg.backend.base_url = server.url
        results = run_eval(cfg)
        requests_first = sum(server.attempts.values())
        again = run_eval(EvalConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "out2")}))
        assert sum(server.attempts.values()) == requests_first == 6  # the re-run is served from the cache
    # EN: 2/4 = 0.5 (sys1 2/2 = 1, sys1.x 0/1, sys2 0/1); ZH: 1/2 = 0.5; avg (0.5 + 0.5) / 2 = 0.5
    en = results["by_language"]["en"]
    assert (en["total"], en["system1"], en["system1.x"], en["system2"]) == (0.5, 1.0, 0.0, 0.0)
    assert results["by_language"]["zh"]["total"] == 0.5 and results["avg"] == 0.5
    assert again["by_language"] == results["by_language"]
    assert (tmp_path / "out" / "table.md").exists() and (tmp_path / "out" / "responses.jsonl").exists()


class ScriptedChat:
    """A ChatBackend that answers from a question -> letter map, can crash after N answers, and records calls."""

    name = "scripted"

    def __init__(self, fingerprint="fp-a", crash_after=None):
        self._fingerprint = fingerprint
        self.crash_after = crash_after
        self.asked: list[str] = []

    def fingerprint(self):
        return self._fingerprint

    def complete(self, conversations, max_new_tokens):
        for index, conversation in enumerate(conversations):
            if self.crash_after is not None and len(self.asked) >= self.crash_after:
                raise RuntimeError("simulated crash")
            user = conversation[-1]["content"]
            self.asked.append(user)
            yield index, Completion(text="Answer: B", num_tokens=3, finish_reason="stop")


def test_cache_resume_after_crash_and_torn_line(tmp_path):
    bench = _write_bench(tmp_path / "bench.json")
    cfg = EvalConfig(
        model="m",
        model_name="m",
        benchmark=str(bench),
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "out"),
        bootstrap_iters=0,
        tracking=MLflowConfig(enabled=False),
    )
    crashing = ScriptedChat(crash_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(cfg, backend=crashing)
    (cache_file,) = (tmp_path / "cache").glob("*.jsonl")
    assert len(cache_file.read_text().splitlines()) == 3  # everything answered before the crash is on disk
    with open(cache_file, "a") as handle:
        handle.write('{"key": "en/q3", "resp')  # a write torn by the crash
    resumed = ScriptedChat()
    results = run_eval(cfg, backend=resumed)
    assert len(resumed.asked) == 3  # only the 3 missing questions are asked again
    assert results["overall"]["n"] == 6
    # every response says B: gold B for q1 and z0 -> EN 1/4 = 0.25, ZH 1/2 = 0.5
    assert results["by_language"]["en"]["total"] == 0.25 and results["by_language"]["zh"]["total"] == 0.5


def test_two_models_never_share_a_cache(tmp_path):
    bench = _write_bench(tmp_path / "bench.json")
    cfg = EvalConfig(
        model="m",
        model_name="same-name",
        benchmark=str(bench),
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "o"),
        bootstrap_iters=0,
        tracking=MLflowConfig(enabled=False),
    )
    first, second = ScriptedChat("weights-1"), ScriptedChat("weights-2")
    run_eval(cfg, backend=first)
    run_eval(EvalConfig(**{**cfg.__dict__}), backend=second)
    assert len(first.asked) == len(second.asked) == 6  # same name, different weights: nothing reused
    assert len(list((tmp_path / "cache").glob("*.jsonl"))) == 2
    cache = ResponseCache(tmp_path / "cache", "same-name", "weights-1", "b", "c")
    (other,) = [p for p in (tmp_path / "cache").glob("*.jsonl")][:1]
    cache.path = other  # point at a file written under a different key
    with pytest.raises(ValueError, match="refusing to mix"):
        cache.load()


def test_responses_of_the_same_weights_are_seeded_from_another_cache_folder(tmp_path):
    bench = _write_bench(tmp_path / "bench.json")

    def config(name, folder, seeds=()):
        return EvalConfig(
            model="m",
            model_name=name,
            benchmark=str(bench),
            cache_dir=str(tmp_path / folder),
            cache_seed_dirs=[str(tmp_path / s) for s in seeds],
            output_dir=str(tmp_path / f"o-{folder}"),
            bootstrap_iters=0,
            tracking=MLflowConfig(enabled=False),
        )

    first = ScriptedChat("weights-1")
    original = run_eval(config("base+CPT+SFT", "a"), backend=first)
    # another pipeline, another label for the same weights: every response comes from folder a
    again = ScriptedChat("weights-1")
    seeded = run_eval(config("base+SFT", "b", seeds=["a"]), backend=again)
    assert len(first.asked) == 6 and again.asked == []
    assert seeded["by_language"] == original["by_language"]
    # other weights never take those responses
    other = ScriptedChat("weights-2")
    run_eval(config("base+SFT", "c", seeds=["a", "b"]), backend=other)
    assert len(other.asked) == 6


@pytest.fixture(scope="module")
def tiny_backend():
    from anessuite.backends.hf import HFChatBackend

    return HFChatBackend("tiny-qwen2", batch_size=4, dtype="float32")


def test_hf_backend_batched_equals_one_by_one(tiny_backend):
    conversations = [_conv("short"), _conv("a somewhat longer prompt here"), _conv("mid length one")]
    batched = dict(tiny_backend.complete(conversations, max_new_tokens=6))
    tiny_backend.batch_size = tiny_backend.generator.batch_size = 1
    try:
        single = dict(tiny_backend.complete(conversations, max_new_tokens=6))
    finally:
        tiny_backend.batch_size = tiny_backend.generator.batch_size = 4
    assert [batched[i].text for i in range(3)] == [single[i].text for i in range(3)]
    assert all(batched[i].num_tokens <= 6 for i in range(3))


def test_hf_loglik_letters_batched_equals_one_by_one(tiny_backend):
    item = _items()[0]
    from anessuite.prompts import PromptConfig, build_direct_messages

    messages, prefix = build_direct_messages(item, PromptConfig())
    conversations = [messages, _conv("other question")]
    batched = dict(tiny_backend.score_letters(conversations, [prefix, "Answer:"], [item.letters, ["A", "B"]]))
    tiny_backend.batch_size = 1
    try:
        single = dict(
            tiny_backend.score_letters(conversations, [prefix, "Answer:"], [item.letters, ["A", "B"]])
        )
    finally:
        tiny_backend.batch_size = 4
    assert sorted(batched[0]) == ["A", "B", "C", "D"] and sorted(batched[1]) == ["A", "B"]
    for index in (0, 1):
        for letter, value in batched[index].items():
            assert value < 0 and value == pytest.approx(single[index][letter], abs=1e-4)
    # the one-forward fast path equals scoring the full sequence prompt + letter token
    from anessuite.backends.hf import encode_chat

    prompt = encode_chat(tiny_backend.tokenizer, messages, assistant_prefix=prefix)
    (cont_b,) = tiny_backend._continuations(prefix, ["B"])
    (full,) = tiny_backend._sequence_logprobs([prompt + cont_b], [len(cont_b)])
    assert batched[0]["B"] == pytest.approx(full, abs=1e-4)


def test_vllm_backend_with_a_stand_in_engine(monkeypatch):
    """The vLLM path without a GPU: a stand-in `vllm` module records what the backend sends and returns."""
    import sys
    import types

    from transformers import AutoTokenizer

    from rlcore.models import resolve_model_path

    calls = {}

    class FakeLLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def get_tokenizer(self):
            return AutoTokenizer.from_pretrained(resolve_model_path("tiny-qwen2"))

        def generate(self, prompts, params, use_tqdm=False):
            calls.setdefault("chunks", []).append(len(prompts))
            calls.setdefault("prompts", []).extend(prompts)
            calls["params"] = params
            sample = types.SimpleNamespace(text="Answer: C", token_ids=[1, 2, 3], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[sample]) for _ in prompts]

    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from anessuite.backends.vllm_offline import VLLMChatBackend

    backend = VLLMChatBackend("tiny-qwen2", tensor_parallel_size=2, chunk_size=2)
    results = dict(backend.complete([_conv("a"), _conv("b"), _conv("c")], max_new_tokens=32))
    assert calls["init"]["tensor_parallel_size"] == 2
    assert calls["params"] == {"temperature": 0.0, "max_tokens": 32, "n": 1}  # greedy, the token cap
    assert calls["chunks"] == [2, 1]  # chunks reach the cache as they finish
    assert results[2].text == "Answer: C" and results[2].num_tokens == 3
    assert len(backend.fingerprint()) == 16
    # chat-template switches reach the template the prompts are rendered with
    backend.tokenizer.chat_template = "{% if enable_thinking %}T{% endif %}{{ messages[-1]['content'] }}"
    backend.chat_template_kwargs = {"enable_thinking": True}
    list(backend.complete([_conv("x")], max_new_tokens=4))
    assert backend.tokenizer.decode(calls["prompts"][-1]["prompt_token_ids"]) == "Tx"


def test_chat_template_kwargs_reach_the_template(tiny_backend):
    from anessuite.backends.hf import encode_chat

    tokenizer = tiny_backend.tokenizer
    saved = tokenizer.chat_template
    tokenizer.chat_template = "{% if enable_thinking %}<think>{% endif %}{{ messages[-1]['content'] }}"
    try:
        on = tokenizer.decode(encode_chat(tokenizer, _conv("hi"), template_kwargs={"enable_thinking": True}))
        off = tokenizer.decode(
            encode_chat(tokenizer, _conv("hi"), template_kwargs={"enable_thinking": False})
        )
    finally:
        tokenizer.chat_template = saved
    assert on == "<think>hi" and off == "hi"


def test_local_fingerprint_covers_tokenizer_and_chat_template(tmp_path):
    from anessuite.cache import model_fingerprint

    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    before = model_fingerprint(tmp_path)
    # the same weights with another chat template answer differently: a new cache key
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "<s>{{ messages }}"}')
    after_template = model_fingerprint(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}</s>")
    after_jinja = model_fingerprint(tmp_path)
    assert len({before, after_template, after_jinja}) == 3
    assert model_fingerprint(tmp_path) == after_jinja  # deterministic
